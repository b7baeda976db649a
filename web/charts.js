// Charts: Chart.js, loaded on first use, and the usage charts drawn with it, which are destroyed
// on every page change.

import { h } from './dom.js';
import { capitalize, dayFmt } from './format.js';

// Chart.js is served as a file of its own (/assets/chart.min.js, from Debian's libjs-chart.js)
// and loaded the first time a chart is drawn.
let chartLib = null;
export function loadChartJs() {
  if (window.Chart) return Promise.resolve(window.Chart);
  if (!chartLib) {
    chartLib = new Promise((resolve, reject) => {
      const script = h('script', { src: '/assets/chart.min.js' });
      script.addEventListener('load', () => (window.Chart ? resolve(window.Chart) : reject(new Error('Chart.js did not start.'))));
      script.addEventListener('error', () => {
        chartLib = null;
        script.remove();
        reject(new Error('The charts could not be loaded. Reload the page to try again.'));
      });
      document.head.append(script);
    });
  }
  return chartLib;
}

const charts = new Set();
export function destroyCharts() {
  for (const c of charts) c.destroy();
  charts.clear();
}

const PALETTE = ['#4f46e5', '#0ea5e9', '#f59e0b', '#10b981', '#ef4444', '#8b5cf6', '#ec4899', '#14b8a6', '#84cc16', '#64748b'];
const ENV_COLORS = { production: '#4f46e5', staging: '#f59e0b', development: '#10b981' };

// The stacked series of a usage report: one per key or one per environment.
export function usageSeries(u, by, metric) {
  const days = u.days || [];
  const field = by === 'environment'
    ? (metric === 'tokens' ? 'tokens_by_environment' : 'by_environment')
    : (metric === 'tokens' ? 'tokens_by_key' : 'by_key');
  const groups = by === 'environment'
    ? (u.environments || []).map((e, i) => ({ id: e.environment, label: capitalize(e.environment), color: ENV_COLORS[e.environment] || PALETTE[i % PALETTE.length] }))
    : (u.keys || []).map((k, i) => ({ id: k.key_id, label: `${k.name || k.key_id} (${k.hint || k.key_id})`, color: PALETTE[i % PALETTE.length] }));
  if (!groups.length) return [{ label: metric === 'tokens' ? 'Tokens' : 'Requests', data: days.map(() => 0), backgroundColor: PALETTE[0] }];
  return groups.map((g) => ({
    label: g.label,
    data: days.map((d) => Number((d[field] || {})[g.id]) || 0),
    backgroundColor: g.color,
    borderRadius: 2,
    maxBarThickness: 28,
  }));
}

export function usageChart(Chart, canvas, u, by, metric) {
  const chart = new Chart(canvas, {
    type: 'bar',
    data: { labels: (u.days || []).map((d) => dayFmt.format(new Date(`${d.date}T00:00:00Z`))), datasets: usageSeries(u, by, metric) },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      interaction: { mode: 'index', intersect: false },
      scales: {
        x: { stacked: true, grid: { display: false } },
        y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } },
      },
      plugins: { legend: { position: 'bottom', labels: { boxWidth: 12 } } },
    },
  });
  charts.add(chart);
  return chart;
}
