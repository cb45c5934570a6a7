// Per-day charts from /api/stats?group_by=day, drawn with uPlot (loaded only when the
// operations page opens, so the chat page does not download it).
const DAY_S = 86400;

function colour(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

// Every day from `days` ago to today, with the groups' figures (0 where a day had none).
export function dailySeries(groups, days, now = Date.now()) {
  const byDay = new Map(groups.map((g) => [g.group, g]));
  const today = Math.floor(now / 1000 / DAY_S) * DAY_S;
  const xs = [];
  const turns = [];
  const cost = [];
  const latency = [];
  for (let t = today - (days - 1) * DAY_S; t <= today; t += DAY_S) {
    const key = new Date(t * 1000).toISOString().slice(0, 10);
    const g = byDay.get(key);
    xs.push(t);
    turns.push(g ? g.turns : 0);
    cost.push(g ? g.cost_usd : 0);
    latency.push(g && g.mean_duration_ms !== null ? g.mean_duration_ms / 1000 : null);
  }
  return { xs, turns, cost, latency };
}

export async function drawCharts(groups, targets, days = 30) {
  const { default: uPlot } = await import("./vendor/uplot/uPlot.esm.js");
  const s = dailySeries(groups, days);
  const text = colour("--text");
  const line = colour("--line");
  const axis = { stroke: text, grid: { stroke: line }, ticks: { stroke: line } };
  const charts = [
    [targets.turns, "turns", s.turns, colour("--accent"), true, (v) => String(v)],
    [targets.cost, "USD", s.cost, colour("--focus"), true, (v) => (v ? `$${Number(v.toPrecision(2))}` : "0")],
    [targets.latency, "seconds", s.latency, colour("--danger"), false, (v) => `${Number(v.toPrecision(2))}`],
  ];
  const last = s.xs[s.xs.length - 1];
  const made = [];
  for (const [el, label, ys, stroke, bars, format] of charts) {
    el.replaceChildren();
    const width = Math.max(240, el.clientWidth || 320);
    const opts = {
      width,
      height: 180,
      legend: { show: false },
      cursor: { show: true },
      scales: { x: { time: true, range: () => [s.xs[0] - DAY_S / 2, last + DAY_S / 2] } },
      axes: [axis, { ...axis, size: 56, values: (u, vals) => vals.map(format) }],
      series: [
        {},
        {
          label,
          stroke,
          width: 2,
          fill: bars ? `${stroke}55` : undefined,
          paths: bars ? uPlot.paths.bars({ size: [0.6, 40] }) : undefined,
          points: { show: !bars },
          spanGaps: true,
        },
      ],
    };
    made.push(new uPlot(opts, [s.xs, ys], el));
    el.dataset.points = String(ys.filter((y) => y).length);
  }
  return made;
}
