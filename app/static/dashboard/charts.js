// Charts of the store page, drawn with uPlot (vendored under /dashboard/static/vendor/uplot).
"use strict";

(function () {
  const { formatBytes } = window.MiniS3;
  const COLORS = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2"];

  function width(target) {
    return Math.max(320, Math.min(target.clientWidth || 640, 900));
  }

  const bytesAxis = (label) => ({
    label, size: 70, values: (u, ticks) => ticks.map((v) => formatBytes(Math.round(v))),
  });

  function epoch(samples) {
    return samples.map((s) => Date.parse(s.at) / 1000);
  }

  function queue(target, samples) {
    const data = [epoch(samples), samples.map((s) => s.queueDepth), samples.map((s) => s.throughputBytesPerS)];
    target.replaceChildren();
    return new uPlot({
      width: width(target), height: 220,
      scales: { x: { time: true }, depth: { range: (u, lo, hi) => [0, Math.max(1, hi)] }, bps: {} },
      series: [
        {},
        { label: "queue depth", scale: "depth", stroke: COLORS[0], width: 2, points: { show: samples.length < 30 } },
        { label: "stored per second", scale: "bps", stroke: COLORS[1], width: 2, fill: "rgba(22,163,74,0.08)",
          value: (u, v) => (v === null ? "–" : `${formatBytes(Math.round(v))}/s`) },
      ],
      axes: [{}, { scale: "depth", label: "tasks", size: 50, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 10000] }, { ...bytesAxis("bytes/s"), scale: "bps", side: 1, grid: { show: false } }],
    }, data, target);
  }

  // dedup saves logical - unique; redundancy costs physical - unique (null where a sample has no unique bytes)
  const less = (s, field) => (s.uniqueBytes == null ? null : Math.max(0, s[field] - s.uniqueBytes));

  function dedup(target, samples) {
    const data = [epoch(samples), samples.map((s) => s.logicalBytes), samples.map((s) => s.physicalBytes),
      samples.map((s) => less(s, "logicalBytes")), samples.map((s) => less(s, "physicalBytes"))];
    target.replaceChildren();
    return new uPlot({
      width: width(target), height: 220,
      scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(1, hi)] } },
      series: [
        {},
        { label: "logical", stroke: COLORS[0], width: 2, value: (u, v) => formatBytes(v) },
        { label: "physical", stroke: COLORS[2], width: 2, value: (u, v) => formatBytes(v) },
        { label: "saved by dedup", stroke: COLORS[1], width: 1, fill: "rgba(22,163,74,0.12)", value: (u, v) => (v === null ? "–" : formatBytes(v)) },
        { label: "redundancy", stroke: COLORS[4], width: 1, value: (u, v) => (v === null ? "–" : formatBytes(v)) },
      ],
      axes: [{}, bytesAxis("bytes")],
    }, data, target);
  }

  function nodes(target, list) {
    const xs = list.map((_, i) => i);
    const bars = uPlot.paths.bars({ size: [0.6, 80] });
    target.replaceChildren();
    return new uPlot({
      width: width(target), height: 200,
      scales: { x: { time: false, range: () => [-0.5, list.length - 0.5] }, y: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.1)] } },
      series: [
        { label: "node", value: (u, i) => (i === null ? "–" : list[i].node) },
        { label: "bytes on node", stroke: COLORS[0], fill: "rgba(37,99,235,0.45)", paths: bars, points: { show: false },
          value: (u, v) => formatBytes(v) },
      ],
      axes: [{ splits: () => xs, values: (u, ticks) => ticks.map((i) => (list[i] ? list[i].node : "")), grid: { show: false } },
        bytesAxis("bytes")],
      legend: { show: true },
    }, [xs, list.map((n) => n.bytes)], target);
  }

  // the last chart drawn of each kind, so that what a chart shows can be read back (uPlot keeps its data)
  const drawn = {};
  const keep = (name, draw) => (target, input) => (drawn[name] = draw(target, input));

  window.MiniS3Charts = { queue: keep("queue", queue), dedup: keep("dedup", dedup), nodes: keep("nodes", nodes), drawn };
})();
