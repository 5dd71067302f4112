// Dev-only preload (never deployed): resolves every *.localhost name, such as the
// sandbox vault "sandbox.vault.localhost", to the loopback address. The Key Vault SDK
// insists that the vault host ends with the challenge's resource domain, so the local
// fake vault needs a real-looking name; this makes that name reach 127.0.0.1.
// Load it with: node --require ./dev/loopback-dns.cjs
"use strict";
const dns = require("node:dns");

const original = dns.lookup;
function isLoopbackName(hostname) {
  return typeof hostname === "string" && /(^|\.)localhost\.?$/i.test(hostname);
}

dns.lookup = function lookup(hostname, options, callback, ...rest) {
  if (!isLoopbackName(hostname)) return original.call(this, hostname, options, callback, ...rest);
  const cb = typeof options === "function" ? options : callback;
  const opts = typeof options === "object" && options !== null ? options : {};
  const family = typeof options === "number" ? options : opts.family;
  const address = family === 6 ? "::1" : "127.0.0.1";
  const addressFamily = family === 6 ? 6 : 4;
  process.nextTick(() => {
    if (opts.all) cb(null, [{ address, family: addressFamily }]);
    else cb(null, address, addressFamily);
  });
  return {};
};
const originalPromise = dns.promises.lookup;
dns.promises.lookup = async function lookup(hostname, options) {
  if (!isLoopbackName(hostname)) return originalPromise.call(this, hostname, options);
  const opts = typeof options === "object" && options !== null ? options : { family: options };
  const entry = { address: opts.family === 6 ? "::1" : "127.0.0.1", family: opts.family === 6 ? 6 : 4 };
  return opts.all ? [entry] : entry;
};
