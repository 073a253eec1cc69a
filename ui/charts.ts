/**
 * Small SVG charts of per-minute values, drawn by hand (no chart library): stacked bars for counts
 * and lines for run times, with a y axis (0, the middle and a round top), gridlines, times along
 * the x axis and a legend. Each drawn value carries `data-series`, `data-minute` (ISO) and
 * `data-value`, so what the chart shows can be read back. Colors are CSS classes (style.css).
 */

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 420;
const HEIGHT = 150;
/** Room for the y labels (left), the time labels (bottom) and the legend (top). */
const PAD = { left: 48, right: 8, top: 18, bottom: 20 };

/** One named row of values, one per minute (undefined: nothing that minute). */
export interface Series {
  name: string;
  values: Array<number | undefined>;
}

export interface ChartSpec {
  /** What the chart shows, for screen readers and the tooltip of the whole chart. */
  title: string;
  /** Start of each minute, epoch ms, oldest first. */
  minutes: number[];
  series: Series[];
  /** Text of a value on the y axis and in tooltips. */
  format: (value: number) => string;
}

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number> = {}, text?: string) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The smallest 1, 2 or 5 times a power of ten at or above `max` (1 for nothing). */
export function niceTop(max: number): number {
  if (!(max > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(max));
  for (const step of [1, 2, 5, 10]) if (step * power >= max) return step * power;
  return 10 * power;
}

const pad2 = (n: number) => String(n).padStart(2, "0");
const clock = (ms: number) => {
  const d = new Date(ms);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
};

/** The frame every chart shares: axes, gridlines, y labels up to `top`, times, legend. */
function frame(
  spec: ChartSpec,
  top: number,
  kind: string,
): { root: SVGSVGElement; x: (i: number) => number; y: (v: number) => number; step: number } {
  const root = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    class: `chart ${kind}`,
    role: "img",
    "aria-label": spec.title,
  });
  root.append(svg("title", {}, spec.title));
  const inner = { w: WIDTH - PAD.left - PAD.right, h: HEIGHT - PAD.top - PAD.bottom };
  const n = Math.max(1, spec.minutes.length);
  const step = inner.w / n;
  const x = (i: number) => PAD.left + i * step;
  const y = (v: number) => PAD.top + inner.h - (Math.min(v, top) / top) * inner.h;

  for (const v of [0, top / 2, top]) {
    root.append(svg("line", { class: v === 0 ? "axis" : "grid", x1: PAD.left, x2: WIDTH - PAD.right, y1: y(v), y2: y(v) }));
    root.append(svg("text", { class: "label", x: PAD.left - 4, y: y(v) + 3.5, "text-anchor": "end" }, spec.format(v)));
  }
  root.append(svg("line", { class: "axis", x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: y(0) }));
  // Five times along the bottom: the oldest minute, three between, the current one.
  for (let k = 0; k <= 4; k++) {
    const i = Math.round((k * (n - 1)) / 4);
    const minute = spec.minutes[i];
    if (minute === undefined) continue;
    const anchor = k === 0 ? "start" : k === 4 ? "end" : "middle";
    const at = k === 4 ? x(i) + step : x(i) + step / 2;
    root.append(svg("line", { class: "axis", x1: x(i) + step / 2, x2: x(i) + step / 2, y1: y(0), y2: y(0) + 3 }));
    root.append(svg("text", { class: "label", x: at, y: HEIGHT - 5, "text-anchor": anchor }, clock(minute)));
  }
  // Legend, top right.
  let right = WIDTH - PAD.right;
  for (const [k, s] of [...spec.series.entries()].reverse()) {
    const label = svg("text", { class: "legend", x: right, y: 11, "text-anchor": "end" }, s.name);
    right -= s.name.length * 6.2 + 4;
    root.append(label, svg("rect", { class: `key s${k}`, x: right - 9, y: 3, width: 9, height: 9, rx: 2 }));
    right -= 18;
  }
  return { root, x, y, step };
}

/** Stacked bars, one per minute: the series from the bottom up (counts). */
export function barChart(spec: ChartSpec): SVGSVGElement {
  const totals = spec.minutes.map((_, i) => spec.series.reduce((sum, s) => sum + (s.values[i] ?? 0), 0));
  const top = niceTop(Math.max(0, ...totals));
  const { root, x, y, step } = frame(spec, top, "bars");
  spec.minutes.forEach((minute, i) => {
    let base = 0;
    spec.series.forEach((s, k) => {
      const value = s.values[i] ?? 0;
      if (value <= 0) return;
      const bar = svg("rect", {
        class: `s${k}`,
        x: x(i) + step * 0.12,
        width: Math.max(1, step * 0.76),
        y: y(base + value),
        height: Math.max(1, y(base) - y(base + value)),
        "data-series": s.name,
        "data-minute": new Date(minute).toISOString(),
        "data-value": value,
      });
      bar.append(svg("title", {}, `${clock(minute)} ${s.name}: ${spec.format(value)}`));
      root.append(bar);
      base += value;
    });
  });
  return root;
}

/** Lines through each series' values, broken where a minute has none; a dot on every value. */
export function lineChart(spec: ChartSpec): SVGSVGElement {
  const all = spec.series.flatMap((s) => s.values.filter((v): v is number => v !== undefined));
  const top = niceTop(Math.max(0, ...all));
  const { root, x, y, step } = frame(spec, top, "lines");
  spec.series.forEach((s, k) => {
    let run: string[] = [];
    const flush = () => {
      if (run.length > 1) root.append(svg("polyline", { class: `s${k}`, points: run.join(" ") }));
      run = [];
    };
    spec.minutes.forEach((minute, i) => {
      const value = s.values[i];
      if (value === undefined) {
        flush();
        return;
      }
      const cx = x(i) + step / 2;
      run.push(`${cx.toFixed(1)},${y(value).toFixed(1)}`);
      const dot = svg("circle", {
        class: `s${k}`,
        cx: cx.toFixed(1),
        cy: y(value).toFixed(1),
        r: 1.8,
        "data-series": s.name,
        "data-minute": new Date(minute).toISOString(),
        "data-value": value,
      });
      dot.append(svg("title", {}, `${clock(minute)} ${s.name}: ${spec.format(value)}`));
      root.append(dot);
    });
    flush();
  });
  return root;
}
