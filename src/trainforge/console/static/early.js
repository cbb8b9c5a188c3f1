// Inlined into a page's <head> (console/assets.py): starts the page's first data requests while its
// modules and the chart library load; common.js's api() takes each answer once.
window.tfPending = {};
window.tfEarly = (paths) => { for (const p of paths) window.tfPending[p] = fetch(p, { credentials: 'same-origin' }); };
