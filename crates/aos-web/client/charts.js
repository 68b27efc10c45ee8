// Small SVG charts: a line chart over time, a column chart, a gauge, and KPI cards.
// Colours come from CSS classes (c0…c5, level names) so the charts follow the style sheet.

import {h, fmtTime, fmtValue} from './dom.js';

const SVG = 'http://www.w3.org/2000/svg';

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) el.setAttribute(key, String(value));
  }
  for (const child of children) if (child !== null) el.append(child);
  return el;
}

const round = (x) => Math.round(x * 10) / 10;

/** Draws a chart into `holder`, at the holder's current width unless `options.width` says. */
export function drawInto(holder, chart, options) {
  holder.replaceChildren(chart({width: Math.max(holder.clientWidth, 320), ...options}));
}

// ---- scales ----

/** Round tick values (1, 2, 5 × 10^n) covering [min, max]; whole numbers only for counts. */
function valueTicks(min, max, count, whole = false) {
  if (min === max) {
    const pad = Math.abs(min) > 1 ? Math.abs(min) * 0.1 : 1;
    min -= pad;
    max += pad;
  }
  const raw = (max - min) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / magnitude;
  const step = Math.max(whole ? 1 : 0, (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * magnitude);
  const decimals = Math.max(0, -Math.floor(Math.log10(step)));
  const first = Math.floor(min / step);
  const ticks = [];
  for (let i = first; ; i += 1) {
    ticks.push(Number((i * step).toFixed(decimals)));
    if (i * step >= max - step * 1e-9) break;
  }
  return ticks;
}

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const TIME_STEPS = [
  SECOND, 2 * SECOND, 5 * SECOND, 10 * SECOND, 15 * SECOND, 30 * SECOND,
  MINUTE, 2 * MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE,
  HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY,
];

/** Tick times at a round step, aligned on the local clock (whole hours, local midnight). */
function timeTicks(from, to, count) {
  const step = TIME_STEPS.find((x) => (to - from) / x <= count) || TIME_STEPS[TIME_STEPS.length - 1];
  const offset = (t) => new Date(t).getTimezoneOffset() * MINUTE;
  const ticks = [];
  for (let t = Math.ceil((from - offset(from)) / step) * step + offset(from); t <= to; t += step) ticks.push(t);
  return {ticks, step};
}

function timeLabel(t, step) {
  const date = new Date(t);
  if (step >= DAY) return date.toLocaleDateString([], {month: 'short', day: 'numeric'});
  if (step < MINUTE) return date.toLocaleTimeString([], {hour: '2-digit', minute: '2-digit', second: '2-digit'});
  const midnight = date.getHours() === 0 && date.getMinutes() === 0;
  if (midnight && step >= HOUR) return date.toLocaleDateString([], {month: 'short', day: 'numeric'});
  return date.toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'});
}

function legend(names) {
  return h('div', {class: 'legend'}, names.map((name, i) =>
    h('span', {class: 'legend-item'}, h('span', {class: `swatch c${i % 6}`}), name)));
}

// ---- line chart ----

/**
 * A line chart over time. `series`: [{name, points: [{t: ms, v: number}]}], oldest first;
 * `from`/`to` (ms) fix the time axis, otherwise it spans the data.
 * Each series is a path with data-testid `chart-series` and `data-points` (its number of points).
 */
export function lineChart({series, from, to, width = 720, height = 260, testid = 'chart', empty = 'No data in this range'}) {
  const margin = {top: 12, right: 16, bottom: 28, left: 56};
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const all = series.flatMap((x) => x.points);
  const times = all.map((p) => p.t);
  const start = from ?? (times.length ? Math.min(...times) : Date.now() - HOUR);
  let end = to ?? (times.length ? Math.max(...times) : Date.now());
  if (end <= start) end = start + MINUTE;
  const values = all.map((p) => p.v);
  const yTicks = valueTicks(values.length ? Math.min(...values) : 0, values.length ? Math.max(...values) : 1, Math.max(2, Math.floor(plotH / 45)));
  const yMin = yTicks[0];
  const yMax = yTicks[yTicks.length - 1];
  const x = (t) => margin.left + ((t - start) / (end - start)) * plotW;
  const y = (v) => margin.top + plotH - ((v - yMin) / (yMax - yMin)) * plotH;

  const svg = s('svg', {class: 'chart-svg', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'data-testid': testid});
  const grid = s('g', {class: 'grid'});
  for (const v of yTicks) {
    grid.append(
      s('line', {x1: margin.left, x2: width - margin.right, y1: round(y(v)), y2: round(y(v))}),
      s('text', {x: margin.left - 6, y: round(y(v)) + 4, 'text-anchor': 'end', class: 'tick'}, String(v)),
    );
  }
  const {ticks, step} = timeTicks(start, end, Math.max(2, Math.floor(plotW / 90)));
  for (const t of ticks) {
    grid.append(
      s('line', {x1: round(x(t)), x2: round(x(t)), y1: margin.top, y2: margin.top + plotH, class: 'vertical'}),
      s('text', {x: round(x(t)), y: height - 8, 'text-anchor': 'middle', class: 'tick'}, timeLabel(t, step)),
    );
  }
  svg.append(grid, s('line', {class: 'axis', x1: margin.left, x2: width - margin.right, y1: margin.top + plotH, y2: margin.top + plotH}));

  series.forEach((one, i) => {
    const d = one.points.map((p, j) => `${j ? 'L' : 'M'}${round(x(p.t))} ${round(y(p.v))}`).join(' ');
    svg.append(s('path', {d, class: `line c${i % 6}`, fill: 'none', 'data-testid': 'chart-series', 'data-series': one.name, 'data-points': one.points.length}));
    // Markers make single points visible and give each point a tooltip; too many would clutter.
    if (one.points.length <= 60) {
      const marks = s('g', {class: `marks c${i % 6}`});
      for (const p of one.points) {
        marks.append(s('circle', {cx: round(x(p.t)), cy: round(y(p.v)), r: 3}, s('title', {}, `${one.name}: ${fmtValue(p.v)} at ${fmtTime(new Date(p.t).toISOString())}`)));
      }
      svg.append(marks);
    }
  });
  if (!all.length) {
    svg.append(s('text', {x: margin.left + plotW / 2, y: margin.top + plotH / 2, 'text-anchor': 'middle', class: 'chart-empty'}, empty));
  }
  return h('figure', {class: 'chart'}, svg, series.length ? legend(series.map((x) => x.name)) : null);
}

// ---- column chart ----

/** Columns of counts with their value on top: `bars`: [{label, value, cls}] (`cls` colours the column). */
export function columnChart({bars, width = 480, height = 220, testid = 'column-chart'}) {
  const margin = {top: 18, right: 12, bottom: 28, left: 40};
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const yTicks = valueTicks(0, Math.max(1, ...bars.map((b) => b.value)), 4, true);
  const yMax = yTicks[yTicks.length - 1];
  const y = (v) => margin.top + plotH - (v / yMax) * plotH;
  const svg = s('svg', {class: 'chart-svg', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'data-testid': testid});
  const grid = s('g', {class: 'grid'});
  for (const v of yTicks) {
    grid.append(
      s('line', {x1: margin.left, x2: width - margin.right, y1: round(y(v)), y2: round(y(v))}),
      s('text', {x: margin.left - 6, y: round(y(v)) + 4, 'text-anchor': 'end', class: 'tick'}, String(v)),
    );
  }
  svg.append(grid);
  const slot = plotW / Math.max(1, bars.length);
  const barW = Math.min(64, slot * 0.6);
  bars.forEach((bar, i) => {
    const cx = margin.left + slot * (i + 0.5);
    svg.append(
      s('rect', {x: round(cx - barW / 2), y: round(y(bar.value)), width: round(barW), height: round(margin.top + plotH - y(bar.value)), class: `column ${bar.cls || 'c0'}`, 'data-label': bar.label, 'data-value': bar.value}),
      s('text', {x: round(cx), y: round(y(bar.value)) - 4, 'text-anchor': 'middle', class: 'column-value'}, String(bar.value)),
      s('text', {x: round(cx), y: height - 8, 'text-anchor': 'middle', class: 'tick'}, bar.label),
    );
  });
  svg.append(s('line', {class: 'axis', x1: margin.left, x2: width - margin.right, y1: margin.top + plotH, y2: margin.top + plotH}));
  return h('figure', {class: 'chart'}, svg);
}

// ---- gauge ----

/** A half-circle gauge of `value` out of `max`, with the share in the middle. */
export function gauge({value, max, label, width = 240, testid = 'gauge'}) {
  const height = Math.round(width * 0.62);
  const r = width / 2 - 16;
  const cx = width / 2;
  const cy = r + 12;
  const share = max > 0 ? Math.min(1, Math.max(0, value / max)) : 0;
  const point = (fraction) => {
    const angle = Math.PI * (1 - fraction);
    return `${round(cx + r * Math.cos(angle))} ${round(cy - r * Math.sin(angle))}`;
  };
  const arc = (fraction) => `M${point(0)} A${round(r)} ${round(r)} 0 0 1 ${point(fraction)}`;
  const svg = s('svg', {class: 'chart-svg gauge', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'data-testid': testid, 'data-value': value, 'data-max': max},
    s('path', {d: arc(1), class: 'gauge-track', fill: 'none'}),
    share > 0 ? s('path', {d: arc(share), class: 'gauge-fill', fill: 'none'}) : null,
    s('text', {x: cx, y: cy - 6, 'text-anchor': 'middle', class: 'gauge-value'}, max > 0 ? `${Math.round(share * 100)} %` : '—'),
    s('text', {x: cx, y: cy + 18, 'text-anchor': 'middle', class: 'tick'}, `${value} of ${max}`),
  );
  return h('figure', {class: 'chart gauge-figure'}, svg, label ? h('figcaption', {}, label) : null);
}

// ---- KPI card ----

/** A KPI card: a big number and what it counts; `tone` (`good`, `bad`, `warn`) colours the number. */
export function kpiCard({key, label, value, hint, tone}) {
  return h('div', {class: `kpi${tone ? ` kpi-${tone}` : ''}`, testid: 'kpi', data: {kpi: key}},
    h('div', {class: 'kpi-value'}, fmtValue(value)),
    h('div', {class: 'kpi-label'}, label),
    hint ? h('div', {class: 'kpi-hint'}, hint) : null);
}
