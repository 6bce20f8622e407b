import { describe, expect, it } from 'vitest';
import { arrangeOthers, gridPages, GRID_PAGE_SIZE, tilesChanged, videoKey } from './tiles';

const tile = (id: string, width = 640, height = 360, source: 'camera' | 'screen' = 'camera') => ({
  participant_id: id,
  source,
  width,
  height,
});

describe('video tiles', () => {
  it('a first list, another set or another source is always told', () => {
    expect(tilesChanged(null, [])).toBe(true);
    expect(tilesChanged([tile('1')], [tile('2')])).toBe(true);
    expect(tilesChanged([tile('1')], [tile('1'), tile('2')])).toBe(true);
    expect(tilesChanged([tile('1')], [tile('1', 640, 360, 'screen')])).toBe(true);
    expect(tilesChanged([tile('1'), tile('2')], [tile('1')])).toBe(true);
  });

  it('a small size change is not, a large one is', () => {
    expect(tilesChanged([tile('1', 640, 360)], [tile('1', 600, 340)])).toBe(false);
    expect(tilesChanged([tile('1', 640, 360)], [tile('1', 320, 180)])).toBe(true);
    expect(tilesChanged([tile('1', 320, 180)], [tile('1', 1280, 720)])).toBe(true);
    expect(tilesChanged([], [])).toBe(false);
  });

  it('pages the grid and clamps the page after people left', () => {
    expect(gridPages(1, 0)).toEqual({ pages: 1, page: 0 });
    expect(gridPages(GRID_PAGE_SIZE, 0)).toEqual({ pages: 1, page: 0 });
    expect(gridPages(GRID_PAGE_SIZE + 1, 1)).toEqual({ pages: 2, page: 1 });
    expect(gridPages(40, 4)).toEqual({ pages: 5, page: 4 });
    expect(gridPages(40, 9)).toEqual({ pages: 5, page: 4 });
    expect(gridPages(5, 3)).toEqual({ pages: 1, page: 0 });
  });

  it('keys name the participant and the source', () => {
    expect(videoKey('p7', 'screen')).toBe('p7/screen');
  });
});

describe('the order of the tiles', () => {
  const ids = (n: number) => Array.from({ length: n }, (_, i) => `p${i}`);

  it('keeps the order, appends arrivals and drops who left', () => {
    expect(arrangeOthers(['a', 'b', 'c'], ['c', 'a', 'd'], null, 8, new Map())).toEqual(['a', 'c', 'd']);
  });

  it('a speaker already on the first page stays where they are', () => {
    const order = ids(20);
    expect(arrangeOthers(order, order, 'p3', 8, new Map([['p3', 5]]))).toEqual(order);
  });

  it('a speaker on a later page takes the first-page place of whoever spoke least recently', () => {
    const order = ids(20);
    const spoke = new Map<string, number>([
      ['p0', 9],
      ['p1', 8],
      ['p2', 7],
      ['p3', 1],
      ['p4', 6],
      ['p5', 5],
      ['p6', 4],
      ['p7', 3],
      ['p15', 10],
    ]);
    const next = arrangeOthers(order, order, 'p15', 8, spoke);
    expect(next.slice(0, 8)).toEqual(['p0', 'p1', 'p2', 'p15', 'p4', 'p5', 'p6', 'p7']);
    expect(next[15]).toBe('p3');
    // Nobody on the first page has spoken: the last place there goes.
    const fresh = arrangeOthers(order, order, 'p12', 8, new Map([['p12', 1]]));
    expect(fresh[7]).toBe('p12');
    expect(fresh[12]).toBe('p7');
  });
});
