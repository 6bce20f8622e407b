import { describe, expect, it } from 'vitest';
import { de } from './de';
import { en } from './en';
import { format, translate } from './index';

describe('i18n', () => {
  it('has the same keys and placeholders in German and English', () => {
    expect(Object.keys(en).sort()).toEqual(Object.keys(de).sort());
    for (const key of Object.keys(de) as (keyof typeof de)[]) {
      const ph = (s: string) => (s.match(/\{\w+\}/g) ?? []).sort();
      expect(ph(en[key]), key).toEqual(ph(de[key]));
    }
  });
  it('fills placeholders', () => {
    expect(format('{a} und {b}', { a: 1, b: 'x' })).toBe('1 und x');
    expect(translate('de', 'join.lobby', { admitted_by: 'Frau Kaya' })).toBe('Aus dem Warteraum zugelassen von Frau Kaya');
  });
});
