/**
 * Time-series line charts (uPlot). A chart is rebuilt when its set of series changes and only
 * fed new data otherwise. The canvas is not readable by a screen reader: every chart is
 * labelled, and the numbers it draws are also in a table next to it.
 */
import uPlot from "uplot";

export const PALETTE = ["#0a58ca", "#c2410c", "#15803d", "#7e22ce", "#b91c1c", "#0f766e", "#a16207", "#475569"];

export interface SeriesSpec { label: string; color: string; dash?: boolean }

export class LineChart {
  private plot: uPlot | null = null;
  private key = "";
  readonly el: HTMLElement;

  constructor(label: string, private readonly opts: { yLabel: string; yRange?: [number, number]; height?: number }) {
    this.el = document.createElement("div");
    this.el.className = "chart";
    this.el.setAttribute("role", "img");
    this.el.setAttribute("aria-label", label);
  }

  /** xs: seconds since the epoch; ys: one array per series, null where there is no value. */
  update(series: SeriesSpec[], xs: number[], ys: (number | null)[][]): void {
    const key = JSON.stringify(series);
    const data = [xs, ...ys] as uPlot.AlignedData;
    if (this.plot && key === this.key) {
      this.plot.setData(data);
      return;
    }
    this.plot?.destroy();
    this.key = key;
    const width = Math.max(320, this.el.clientWidth || 560);
    this.plot = new uPlot(
      {
        width,
        height: this.opts.height ?? 240,
        scales: { x: { time: true }, y: this.opts.yRange ? { range: this.opts.yRange } : { auto: true } },
        axes: [{}, { label: this.opts.yLabel }],
        series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 2, dash: s.dash ? [6, 4] : undefined, spanGaps: false }))],
        legend: { live: false },
        cursor: { show: true },
      },
      data,
      this.el,
    );
  }

  destroy(): void {
    this.plot?.destroy();
    this.plot = null;
  }
}
