// Preload for the MCP conformance runner (`node --import`): every request it sends to
// CONFORMANCE_ORIGIN carries `Authorization: Bearer CONFORMANCE_BEARER`.
//
// The runner has no option for request headers, and it reaches a server three ways: the global
// `fetch`, the `undici` package's `request` (through the global dispatcher) and `http.request`.
// Adding the header here, in the client, keeps every other byte exactly as the runner sends it.
// A header the runner set itself is never replaced.
import http from "node:http";
import { createRequire } from "node:module";

const token = process.env.CONFORMANCE_BEARER;
const origin = new URL(process.env.CONFORMANCE_ORIGIN ?? "").origin;
const value = `Bearer ${token}`;
if (!token) throw new Error("CONFORMANCE_BEARER is not set");

const ours = (url) => new URL(String(url)).origin === origin;

// fetch ---------------------------------------------------------------------------------------
const fetch = globalThis.fetch;
globalThis.fetch = (input, init = {}) => {
  const url = input instanceof Request ? input.url : input;
  if (!ours(url)) return fetch(input, init);
  const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
  if (!headers.has("authorization")) headers.set("authorization", value);
  return fetch(input, { ...init, headers });
};

// undici.request (the runner's own undici; the global dispatcher is shared with fetch) -------
const require = createRequire(import.meta.url);
const { Agent, setGlobalDispatcher } = require(
  require.resolve("undici", { paths: [process.env.CONFORMANCE_PACKAGE_DIR ?? process.cwd()] }),
);

function withBearer(headers) {
  if (headers == null) return { authorization: value };
  if (Array.isArray(headers)) {
    const flat = headers.flat();
    const names = flat.filter((_, i) => i % 2 === 0).map((n) => String(n).toLowerCase());
    return names.includes("authorization") ? headers : [...flat, "authorization", value];
  }
  const names = Object.keys(headers).map((n) => n.toLowerCase());
  return names.includes("authorization") ? headers : { ...headers, authorization: value };
}

class BearerAgent extends Agent {
  dispatch(options, handler) {
    if (ours(options.origin)) options = { ...options, headers: withBearer(options.headers) };
    return super.dispatch(options, handler);
  }
}
setGlobalDispatcher(new BearerAgent());

// http.request -----------------------------------------------------------------------------------
const request = http.request;
http.request = (options, ...rest) => {
  if (options && typeof options === "object" && !(options instanceof URL)) {
    const host = options.hostname ?? options.host ?? "localhost";
    const target = `http://${host.includes(":") ? `[${host}]` : host}:${options.port ?? 80}`;
    if (ours(target)) options = { ...options, headers: withBearer(options.headers) };
  }
  return request(options, ...rest);
};
