-- wrk script: a stateless MCP 2026-07-28 `tools/call` of `echo`, the same request every time.
-- Usage: wrk -t1 -c16 -d5s --latency -s bench/mcp_call.lua URL [-- progress]
-- With `progress`, `params._meta` carries a progressToken so an SDK server in SSE mode streams
-- (one progress event, then the result) instead of falling back to application/json.
-- done() prints one line "BENCH_JSON {...}" for bench/run.py.

-- Each wrk thread has its own Lua state; done() runs in the main one and reads the per-thread
-- globals `bad` (non-2xx responses, or a 2xx whose body lacks a JSON-RPC result) and `first_bad`.
local threads = {}
bad = 0
first_bad = nil

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   local progress = ""
   if args[1] == "progress" then
      progress = '"progressToken":1,'
   end
   wrk.method = "POST"
   wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo",'
      .. '"arguments":{"text":"hello"},"_meta":{' .. progress
      .. '"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
      .. '"io.modelcontextprotocol/clientCapabilities":{}}}}'
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Accept"] = "application/json, text/event-stream"
   wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
   wrk.headers["Mcp-Method"] = "tools/call"
   wrk.headers["Mcp-Name"] = "echo"
   -- Through the gateway, bench/run.py passes a valid access token for the route.
   local authorization = os.getenv("BENCH_AUTHORIZATION")
   if authorization ~= nil and authorization ~= "" then
      wrk.headers["Authorization"] = authorization
   end
end

function response(status, headers, body)
   if status < 200 or status > 299 or not string.find(body, '"result"', 1, true) then
      bad = bad + 1
      if first_bad == nil then
         first_bad = status .. " " .. string.sub(body, 1, 300)
      end
   end
end

local function quote(s)
   return '"' .. string.gsub(s, '[%c"\\]', function(c)
      return string.format("\\u%04x", string.byte(c))
   end) .. '"'
end

function done(summary, latency, requests)
   local e = summary.errors
   local nbad, sample = 0, nil
   for _, thread in ipairs(threads) do
      nbad = nbad + thread:get("bad")
      sample = sample or thread:get("first_bad")
   end
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"bad":%d,'
         .. '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,'
         .. '"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"first_bad":%s}\n',
      summary.requests, summary.duration, summary.bytes, nbad,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      sample and quote(sample) or "null"))
end
