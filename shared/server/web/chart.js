// A small bar chart of items per second over time, drawn by hand on a <canvas>.

const BAR = "#2f6fde";
const AXIS = "#9aa3ad";
const TEXT = "#4b5563";

/**
 * Draws `points` (items/s, oldest first, one per `stepS` seconds) as bars, newest at the right,
 * and describes them in the canvas's aria-label for screen readers.
 */
export function drawRateChart(canvas, points, stepS = 1) {
  // draw at the device's pixel density, at the size CSS gives the canvas
  const dpr = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || canvas.width;
  const cssH = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
  }
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);

  const left = 44;
  const bottom = cssH - 18;
  const top = 8;
  const width = cssW - left - 6;
  const max = niceMax(Math.max(0, ...points));

  // axes and the scale's top and bottom labels
  ctx.strokeStyle = AXIS;
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(left + 0.5, top);
  ctx.lineTo(left + 0.5, bottom + 0.5);
  ctx.lineTo(left + width, bottom + 0.5);
  ctx.stroke();
  ctx.fillStyle = TEXT;
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  ctx.fillText(formatRate(max), left - 4, top + 4);
  ctx.fillText("0", left - 4, bottom);
  ctx.textAlign = "left";
  ctx.textBaseline = "alphabetic";
  ctx.fillText("items/s", left + 4, cssH - 4);
  ctx.textAlign = "right";
  ctx.fillText(points.length ? `last ${Math.round(points.length * stepS)} s` : "no data yet", left + width, cssH - 4);

  // one bar per point, at most `slots` of them (the newest)
  const slots = Math.max(1, Math.floor(width / 4));
  const shown = points.slice(-slots);
  const barW = width / Math.max(shown.length, 30);
  ctx.fillStyle = BAR;
  shown.forEach((value, i) => {
    const h = max ? ((bottom - top) * value) / max : 0;
    const x = left + width - (shown.length - i) * barW;
    ctx.fillRect(x + 1, bottom - h, Math.max(1, barW - 1), h);
  });

  const now = points.length ? formatRate(points[points.length - 1]) : "no data";
  canvas.setAttribute("aria-label", `Items per second over time: now ${now}, peak ${formatRate(Math.max(0, ...points))}`);
}

export function formatRate(value) {
  if (!Number.isFinite(value)) return "—";
  return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
}

/** 1, 2 or 5 times a power of ten, at least `value` (a readable top of the scale). */
function niceMax(value) {
  if (value <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 5, 10]) if (m * p >= value) return m * p;
  return 10 * p;
}
