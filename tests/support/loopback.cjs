// Preload (`node -r tests/support/loopback.cjs ...`) that keeps test servers on loopback.
//
// Servers such as @modelcontextprotocol/server-everything call `app.listen(PORT)` with no host,
// which binds every interface. This wraps net.Server.prototype.listen so a TCP listen without a
// host binds 127.0.0.1 instead, and a listen on an explicit non-loopback host fails loudly.
// Unix sockets and handle-based listens are passed through untouched.
"use strict";

const net = require("node:net");

const LOOPBACK = "127.0.0.1";
const LOOPBACK_HOSTS = new Set(["127.0.0.1", "localhost", "::1"]);
const originalListen = net.Server.prototype.listen;

function isPort(value) {
  return (
    typeof value === "number" ||
    (typeof value === "string" && value !== "" && !Number.isNaN(Number(value)))
  );
}

function checkHost(host) {
  if (!LOOPBACK_HOSTS.has(host)) {
    throw new Error(`loopback.cjs: refusing to listen on non-loopback host ${host}`);
  }
}

net.Server.prototype.listen = function listen(...args) {
  const [first] = args;
  if (first !== null && typeof first === "object" && !Array.isArray(first)) {
    // listen(options[, callback]): only TCP options (port, no path/handle) are rewritten.
    const isTcp = [first.path, first.handle, first._handle, first.fd].every((v) => v === undefined);
    if (isTcp) {
      if (first.host === undefined) {
        args[0] = { ...first, host: LOOPBACK };
      } else {
        checkHost(first.host);
      }
    }
  } else if (typeof first === "function" || first === undefined || first === null) {
    // listen([callback]) or listen(undefined[, ...]): an ephemeral port.
    const rest = typeof first === "function" ? args : args.slice(1);
    args = [0, LOOPBACK, ...rest];
  } else if (isPort(first)) {
    // listen(port[, host[, backlog]][, callback])
    if (typeof args[1] === "string") {
      checkHost(args[1]);
    } else {
      args.splice(1, 0, LOOPBACK);
    }
  }
  // A string that is not a port number is a Unix socket / pipe path: leave it alone.
  return originalListen.apply(this, args);
};
