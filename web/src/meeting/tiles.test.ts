import { describe, expect, it } from 'vitest';
import { gridPages, GRID_PAGE_SIZE, tilesChanged, videoKey } from './tiles';

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
