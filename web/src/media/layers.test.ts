import { describe, expect, it } from 'vitest';
import { activeLayers, CAMERA_LAYERS } from './peer';

describe('camera simulcast layers', () => {
  it('are listed low to high, a quarter, half and the full size', () => {
    expect(CAMERA_LAYERS.map((l) => l.rid)).toEqual(['q', 'h', 'f']);
    expect(CAMERA_LAYERS.map((l) => l.scaleResolutionDownBy)).toEqual([4, 2, 1]);
  });

  it('are all on for an HD camera, and only the top ones for smaller cameras', () => {
    expect(activeLayers(1280, 720)).toEqual([true, true, true]);
    expect(activeLayers(960, 540)).toEqual([true, true, true]);
    expect(activeLayers(640, 480)).toEqual([false, true, true]);
    expect(activeLayers(640, 360)).toEqual([false, true, true]);
    // A small camera sends its full picture, never a quarter of it.
    expect(activeLayers(320, 240)).toEqual([false, false, true]);
  });
});
