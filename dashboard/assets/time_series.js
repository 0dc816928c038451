// The overview's time-series panels, drawn with uPlot (vendored beside this file) inside a
// Streamlit v2 component. Plotly's fixed cost per figure in the browser was most of the
// overview's render time; uPlot draws the same lines on one canvas per panel for a
// fraction of it. The payload is built in Python (dashboard/charts.py: overview_panels).
//
// data = {x: [epoch s], x_range: [s, s], services: [{name, color}], incidents: [{x0, x1, label}],
//         incident_fill: css colour, sync_key,
//         panels: [{id, title, y_label, unit, height, wide, legend, label_incidents, values: [[y|null]]}]}

const INCIDENT_TEXT = "#9d0208";
const FONT = '12px "Source Sans", "Source Sans Pro", sans-serif';

function fmtValue(unit, v) {
  if (v == null || Number.isNaN(v)) return "–";
  if (unit === "pct") return (100 * v).toFixed(2) + "%";
  if (unit === "ms") return v.toFixed(0) + " ms";
  return v.toFixed(1);
}

function fmtTick(unit, v) {
  if (unit === "pct") return (100 * v).toFixed(1) + "%";
  return Math.abs(v) >= 10000 ? (v / 1000).toFixed(0) + "k" : String(+v.toFixed(3));
}

// Incident spans as shaded bands over the whole plot height, under the lines.
function shadeIncidents(incidents, fill, label) {
  return (u) => {
    const { ctx, bbox } = u;
    ctx.save();
    ctx.beginPath();
    ctx.rect(bbox.left, bbox.top, bbox.width, bbox.height);
    ctx.clip();
    ctx.fillStyle = fill;
    for (const inc of incidents) {
      const x0 = u.valToPos(inc.x0, "x", true);
      const x1 = u.valToPos(inc.x1, "x", true);
      ctx.fillRect(x0, bbox.top, Math.max(x1 - x0, 1), bbox.height);
    }
    if (label) {
      ctx.fillStyle = INCIDENT_TEXT;
      ctx.font = FONT.replace("12px", `${10 * devicePixelRatio}px`);
      ctx.textBaseline = "top";
      const gap = 6 * devicePixelRatio;
      const rowEnds = [-Infinity, -Infinity]; // two rows of labels; one that fits in neither is left out
      for (const inc of [...incidents].sort((a, b) => a.x0 - b.x0)) {
        const x0 = u.valToPos(inc.x0, "x", true);
        const x1 = u.valToPos(inc.x1, "x", true);
        if (x1 < bbox.left || x0 > bbox.left + bbox.width) continue; // zoomed out of view
        const w = ctx.measureText(inc.label).width;
        // a label near the right edge hangs leftwards from the span's end; one whose span
        // starts left of the view starts at the view's edge
        const right = x0 > bbox.left + bbox.width - w - gap;
        const left = right ? Math.min(x1, bbox.left + bbox.width) - w : Math.max(x0, bbox.left) + 2;
        const row = rowEnds.findIndex((end) => left > end + gap);
        if (row < 0) continue;
        ctx.textAlign = "left";
        ctx.fillText(inc.label, left, bbox.top + 2 + row * 12 * devicePixelRatio);
        rowEnds[row] = left + w;
      }
    }
    ctx.restore();
  };
}

// The data's extent (first draw, double-click reset) shows the range up to now; a zoom (a drag
// across the panel) shows what was selected.
function xRange(data) {
  const first = data.x[0];
  const last = data.x[data.x.length - 1];
  // (one point: uPlot widens the extent itself, to about a year)
  const extent = (min, max) => min == null || data.x.length < 2 || (min === first && max === last);
  return (u, min, max) => (extent(min, max) ? data.x_range : [min, max]);
}

const utc = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");
const fmtDay = uPlot.fmtDate("{MM}-{DD}");
const fmtTime = uPlot.fmtDate("{HH}:{mm}");
const fmtDayTime = uPlot.fmtDate("{HH}:{mm}\n{MM}-{DD}");
const fmtSeconds = uPlot.fmtDate("{HH}:{mm}:{ss}");

// Time ticks on a 24-hour UTC clock: days alone when ticks are a day or more apart, seconds
// when they are under a minute apart, else the time with the date under each day's first tick.
function timeTicks(u, splits, axisIdx, space, incr) {
  return splits.map((v, i) => {
    if (v == null) return null;
    const d = utc(v);
    if (incr >= 86400) return fmtDay(d);
    if (incr < 60) return fmtSeconds(d);
    const newDay = i === 0 || utc(splits[i - 1]).getDate() !== d.getDate();
    return newDay ? fmtDayTime(d) : fmtTime(d);
  });
}

function showNewest(u) {
  const last = u.data[0].length - 1;
  if (u.cursor.idx == null && last >= 0) u.setLegend({ idx: last });
}

function panelOptions(data, panel, width, textColor) {
  const zeroBased = (u, min, max) => [0, max > 0 ? max * 1.05 : 1];
  const axis = { stroke: textColor, font: FONT, grid: { stroke: "rgba(128,128,128,0.15)", width: 1 } };
  return {
    title: panel.title,
    width,
    height: panel.height,
    tzDate: utc,
    scales: { x: { time: true, range: xRange(data) }, y: { range: zeroBased } },
    series: [
      { value: "{YYYY}-{MM}-{DD} {HH}:{mm} UTC" },
      ...data.services.map((s) => ({
        label: s.name,
        stroke: s.color,
        width: 1.6,
        // uPlot's default: points drawn only where they are sparse (a lone window, a short range)
        value: (u, v) => fmtValue(panel.unit, v),
      })),
    ],
    axes: [
      { ...axis, values: timeTicks },
      {
        ...axis,
        label: panel.y_label,
        labelFont: FONT,
        size: 60,
        values: (u, ticks) => ticks.map((v) => fmtTick(panel.unit, v)),
      },
    ],
    legend: { show: panel.legend, live: true },
    // the time under the cursor on every panel; each panel keeps its own y
    cursor: { sync: { key: data.sync_key, scales: ["x", null] }, points: { size: 5 } },
    hooks: {
      drawClear: [shadeIncidents(data.incidents, data.incident_fill, panel.label_incidents)],
      // away from the cursor the legend shows the newest bucket's values
      setCursor: [showNewest],
      ready: [showNewest],
    },
  };
}

function build(root, data) {
  const host = root.host || root;
  const textColor = getComputedStyle(host).getPropertyValue("--st-text-color").trim() || "#31333F";
  const grid = document.createElement("div");
  grid.className = "ts-grid";
  root.appendChild(grid);
  const cells = data.panels.map((panel) => {
    const cell = document.createElement("div");
    cell.className = panel.wide ? "ts-cell ts-wide" : "ts-cell";
    cell.dataset.panel = panel.id;
    grid.appendChild(cell);
    return cell;
  });
  const plots = data.panels.map((panel, i) => {
    const width = Math.max(cells[i].clientWidth, 200);
    return new uPlot(panelOptions(data, panel, width, textColor), [data.x, ...panel.values], cells[i]);
  });
  const resize = new ResizeObserver(() => {
    plots.forEach((u, i) => {
      const width = Math.max(cells[i].clientWidth, 200);
      if (width !== u.width) u.setSize({ width, height: u.height });
    });
  });
  resize.observe(grid);
  let done = false;
  return () => {
    if (done) return;
    done = true;
    resize.disconnect();
    plots.forEach((u) => u.destroy());
    grid.remove();
  };
}

// root -> how to take its panels down: a redraw (the live fragment's refresh) replaces them
const mounted = new WeakMap();

export default function (component) {
  const { data, parentElement } = component;
  mounted.get(parentElement)?.();
  mounted.delete(parentElement);
  if (!data || !data.panels) return;
  const teardown = build(parentElement, data);
  mounted.set(parentElement, teardown);
  return () => {
    if (mounted.get(parentElement) === teardown) mounted.delete(parentElement);
    teardown();
  };
}
