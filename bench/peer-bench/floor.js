// The load floor for peer-bench: a script that does nothing but exist. Its load+init is
// what the harness and the browser cost to fetch and run any script tag, SDK or not.
window.__floor = [];
