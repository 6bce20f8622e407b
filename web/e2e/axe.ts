// The automated accessibility check of a page: axe-core (the engine behind most accessibility
// checkers) run in the page against the rules of WCAG 2.0, 2.1 and 2.2 at levels A and AA, the
// standard that BITV 2.0 and EN 301 549 make binding for a public administration's software.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { expect, type Page } from '@playwright/test';

const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

/** The rule sets checked: WCAG 2.0, 2.1 and 2.2, levels A and AA. */
export const WCAG_AA = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa'];

/** One broken rule: its id, what it asks for, and the elements that break it. */
export interface Violation {
  id: string;
  impact: string | null;
  help: string;
  nodes: string[];
}

/** What the checks use of axe-core's API in the page. */
interface AxeLike {
  run(
    context: Document,
    options: object,
  ): Promise<{ violations: { id: string; impact?: string; help: string; nodes: { target: string[]; failureSummary?: string }[] }[] }>;
}

/** The WCAG A/AA rules the page as it stands breaks, each with up to five of its elements. */
export async function violations(page: Page): Promise<Violation[]> {
  // Evaluated through the browser's debugging protocol, which the page's Content-Security-Policy
  // (no inline or injected scripts) does not govern.
  if (!(await page.evaluate(() => 'axe' in window))) await page.evaluate(axeSource);
  return page.evaluate(async (tags) => {
    const axe = (window as unknown as { axe: AxeLike }).axe;
    const result = await axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] });
    return result.violations.map((v) => ({
      id: v.id,
      impact: v.impact ?? null,
      help: v.help,
      nodes: v.nodes.slice(0, 5).map((n) => `${n.target.join(' ')}: ${n.failureSummary ?? ''}`.replace(/\s+/g, ' ')),
    }));
  }, WCAG_AA);
}

/** The page breaks none of the rules; the message names every broken rule and its elements. */
export async function expectAccessible(page: Page, where: string): Promise<void> {
  const found = await violations(page);
  const text = found.map((v) => `${v.id} (${v.impact}): ${v.help}\n    ${v.nodes.join('\n    ')}`).join('\n  ');
  expect(found, `${where} breaks WCAG rules:\n  ${text}`).toEqual([]);
}
