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

const AXIS_WIDTH = 52;

/** The label of a series: its name, and its unit in brackets. */
function seriesLabel(one) {
  return one.unit ? `${one.name} (${one.unit})` : one.name;
}

/** A path through `points`, broken where two points are further apart than `gap` ms. */
function pathOf(points, x, y, gap) {
  return points.map((p, j) => {
    const jump = j === 0 || (gap && p.t - points[j - 1].t > gap);
    return `${jump ? 'M' : 'L'}${round(x(p.t))} ${round(y(p.v))}`;
  }).join(' ');
}

/**
 * A line chart over time. `series`: [{name, unit, points: [{t: ms, v: number}], interval}],
 * oldest first; series of one unit share a value axis (the first unit's on the left, the others
 * on the right), labelled with the unit. A series of averages over `interval` ms is broken where
 * an interval had no value (a gap, not a line across it). `from`/`to` (ms) fix the time axis,
 * otherwise it spans the data. Hovering shows the values nearest the pointer; dragging across
 * the plot calls `onZoom(from, to)`. Each series is a path with data-testid `chart-series` and
 * `data-points` (its number of points).
 */
export function lineChart({series, from, to, width = 720, height = 260, testid = 'chart', empty = 'No data in this range', onZoom}) {
  const units = [...new Set(series.map((one) => one.unit || ''))];
  const rightAxes = Math.max(0, units.length - 1);
  const margin = {top: 20, right: 16 + rightAxes * AXIS_WIDTH, bottom: 28, left: 56};
  const plotW = Math.max(40, width - margin.left - margin.right);
  const plotH = height - margin.top - margin.bottom;
  const all = series.flatMap((one) => one.points);
  const times = all.map((p) => p.t);
  const start = from ?? (times.length ? Math.min(...times) : Date.now() - HOUR);
  let end = to ?? (times.length ? Math.max(...times) : Date.now());
  if (end <= start) end = start + MINUTE;
  const x = (t) => margin.left + ((t - start) / (end - start)) * plotW;
  const timeAt = (px) => start + ((px - margin.left) / plotW) * (end - start);
  const tickCount = Math.max(2, Math.floor(plotH / 45));
  // One value scale per unit.
  const scales = new Map(units.map((unit) => {
    const values = series.filter((one) => (one.unit || '') === unit).flatMap((one) => one.points.map((p) => p.v));
    const ticks = valueTicks(values.length ? Math.min(...values) : 0, values.length ? Math.max(...values) : 1, tickCount);
    const min = ticks[0];
    const max = ticks[ticks.length - 1];
    return [unit, {ticks, y: (v) => margin.top + plotH - ((v - min) / (max - min)) * plotH}];
  }));

  const svg = s('svg', {class: 'chart-svg', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'data-testid': testid});
  const grid = s('g', {class: 'grid'});
  units.forEach((unit, i) => {
    const {ticks, y} = scales.get(unit);
    // The left axis draws the grid; each axis its ticks and its unit.
    const ax = i === 0 ? margin.left : margin.left + plotW + (i - 1) * AXIS_WIDTH;
    const anchor = i === 0 ? 'end' : 'start';
    const dx = i === 0 ? -6 : 6;
    for (const v of ticks) {
      if (i === 0) grid.append(s('line', {x1: margin.left, x2: margin.left + plotW, y1: round(y(v)), y2: round(y(v))}));
      grid.append(s('text', {x: ax + dx, y: round(y(v)) + 4, 'text-anchor': anchor, class: 'tick'}, String(v)));
    }
    if (unit) grid.append(s('text', {x: ax + dx, y: margin.top - 8, 'text-anchor': anchor, class: 'tick unit', 'data-testid': 'chart-unit'}, unit));
    if (i > 0) grid.append(s('line', {class: 'axis', x1: ax, x2: ax, y1: margin.top, y2: margin.top + plotH}));
  });
  const {ticks, step} = timeTicks(start, end, Math.max(2, Math.floor(plotW / 90)));
  for (const t of ticks) {
    grid.append(
      s('line', {x1: round(x(t)), x2: round(x(t)), y1: margin.top, y2: margin.top + plotH, class: 'vertical'}),
      s('text', {x: round(x(t)), y: height - 8, 'text-anchor': 'middle', class: 'tick'}, timeLabel(t, step)),
    );
  }
  svg.append(grid, s('line', {class: 'axis', x1: margin.left, x2: margin.left + plotW, y1: margin.top + plotH, y2: margin.top + plotH}));

  series.forEach((one, i) => {
    const {y} = scales.get(one.unit || '');
    const gap = one.interval ? one.interval * 1.5 : null;
    svg.append(s('path', {d: pathOf(one.points, x, y, gap), class: `line c${i % 6}`, fill: 'none', 'data-testid': 'chart-series', 'data-series': one.name, 'data-points': one.points.length}));
    // Markers make single points visible; too many would clutter.
    if (one.points.length <= 60) {
      const marks = s('g', {class: `marks c${i % 6}`, 'data-series': one.name});
      for (const p of one.points) marks.append(s('circle', {cx: round(x(p.t)), cy: round(y(p.v)), r: 3}));
      svg.append(marks);
    }
  });
  if (!all.length) {
    svg.append(s('text', {x: margin.left + plotW / 2, y: margin.top + plotH / 2, 'text-anchor': 'middle', class: 'chart-empty'}, empty));
  } else {
    interact(svg, {series, scales, x, timeAt, margin, plotW, plotH, onZoom});
  }
  return h('figure', {class: 'chart'}, svg, series.length ? legend(series.map(seriesLabel)) : null);
}

/** Hover (the values nearest the pointer, on a line across the plot) and drag-to-zoom. */
function interact(svg, {series, scales, x, timeAt, margin, plotW, plotH, onZoom}) {
  const hover = s('g', {class: 'hover', 'data-testid': 'chart-hover', visibility: 'hidden'});
  const rule = s('line', {class: 'hover-rule', y1: margin.top, y2: margin.top + plotH});
  const box = s('rect', {class: 'hover-box', rx: 4});
  const text = s('text', {class: 'hover-text'});
  hover.append(rule, box, text);
  const band = s('rect', {class: 'zoom-band', y: margin.top, height: plotH, visibility: 'hidden'});
  const pad = s('rect', {class: 'chart-pad', x: margin.left, y: margin.top, width: plotW, height: plotH, fill: 'transparent'});
  svg.append(band, hover, pad);
  // The pointer's position in the chart's own units (the SVG may be drawn scaled).
  const local = (event) => {
    const bounds = svg.getBoundingClientRect();
    const scale = Number(svg.getAttribute('width')) / bounds.width;
    return (event.clientX - bounds.left) * scale;
  };
  const nearest = (t) => series.map((one) => {
    let best = null;
    for (const p of one.points) if (!best || Math.abs(p.t - t) < Math.abs(best.t - t)) best = p;
    return best ? {one, p: best} : null;
  }).filter(Boolean);
  let dragFrom = null;
  pad.addEventListener('pointermove', (event) => {
    const px = Math.min(margin.left + plotW, Math.max(margin.left, local(event)));
    if (dragFrom !== null) {
      band.setAttribute('x', round(Math.min(dragFrom, px)));
      band.setAttribute('width', round(Math.abs(px - dragFrom)));
    }
    const found = nearest(timeAt(px));
    if (!found.length) return;
    const t = found[0].p.t;
    rule.setAttribute('x1', round(x(t)));
    rule.setAttribute('x2', round(x(t)));
    text.replaceChildren(
      s('tspan', {x: 0, dy: '1.1em', class: 'hover-time'}, fmtTime(new Date(t).toISOString())),
      ...found.map(({one, p}) => s('tspan', {x: 0, dy: '1.2em', 'data-series': one.name}, `${one.name}: ${fmtValue(p.v)}${one.unit ? ` ${one.unit}` : ''}`)),
    );
    const lines = found.length + 1;
    const boxW = 12 + 7 * Math.max(...[fmtTime(new Date(t).toISOString()), ...found.map(({one, p}) => `${one.name}: ${fmtValue(p.v)} ${one.unit || ''}`)].map((l) => l.length));
    const left = x(t) + boxW + 16 > margin.left + plotW ? x(t) - boxW - 8 : x(t) + 8;
    text.setAttribute('transform', `translate(${round(left + 6)} ${margin.top + 2})`);
    box.setAttribute('x', round(left));
    box.setAttribute('y', margin.top);
    box.setAttribute('width', round(boxW));
    box.setAttribute('height', round(lines * 14 + 10));
    for (const mark of hover.querySelectorAll('circle')) mark.remove();
    found.forEach(({one, p}) => hover.append(s('circle', {cx: round(x(p.t)), cy: round(scales.get(one.unit || '').y(p.v)), r: 4, class: `hover-dot c${series.indexOf(one) % 6}`})));
    hover.setAttribute('visibility', 'visible');
  });
  pad.addEventListener('pointerleave', () => {
    hover.setAttribute('visibility', 'hidden');
  });
  if (!onZoom) return;
  pad.addEventListener('pointerdown', (event) => {
    dragFrom = local(event);
    pad.setPointerCapture(event.pointerId);
    band.setAttribute('x', round(dragFrom));
    band.setAttribute('width', 0);
    band.setAttribute('visibility', 'visible');
  });
  pad.addEventListener('pointerup', (event) => {
    if (dragFrom === null) return;
    const px = Math.min(margin.left + plotW, Math.max(margin.left, local(event)));
    const [a, b] = [dragFrom, px].sort((l, r) => l - r);
    dragFrom = null;
    band.setAttribute('visibility', 'hidden');
    // A click is not a zoom.
    if (b - a >= 8) onZoom(Math.round(timeAt(a)), Math.round(timeAt(b)));
  });
}

/** The shown series as CSV (`time,attribute,value,unit`, times in UTC, RFC 3339). */
export function seriesCsv(series) {
  const quote = (text) => (/[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text);
  const rows = series.flatMap((one) => one.points.map((p) => [new Date(p.t).toISOString(), one.name, String(p.v), one.unit || '']))
    .sort((a, b) => a[0].localeCompare(b[0]) || a[1].localeCompare(b[1]));
  return ['time,attribute,value,unit', ...rows.map((row) => row.map(quote).join(','))].join('\n') + '\n';
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
