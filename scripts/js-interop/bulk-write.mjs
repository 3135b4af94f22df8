// js-libp2p bulk write against a running `igord node` (issue 12, found 7):
// js-libp2p's yamux sends as much as the receiver's window allows in ONE
// frame; rust-yamux drops the whole connection on a frame above 1 MiB. The
// node keeps every stream window at or below 1 MiB (src/p2p.rs,
// YAMUX_MAX_STREAMS), so the connection must survive this.
//
// Setup (once):  cd scripts/js-interop && npm init -y && npm pkg set type=module &&
//   npm install libp2p@3 @libp2p/tcp @chainsafe/libp2p-noise @chainsafe/libp2p-yamux \
//     @libp2p/identify @libp2p/ping @multiformats/multiaddr
// Run:  node bulk-write.mjs /ip4/127.0.0.1/tcp/PORT/p2p/PEER_ID [bytes, default 64 MiB]
// Expect "connection status open" and a ping after. Measured 2026-11-30:
// this branch: 64 MiB sent in 784 ms, connection open; main before the fix:
// send failed after 123 ms, connection aborted.
if (!Promise.withResolvers) {
  Promise.withResolvers = function () { let resolve, reject; const promise = new Promise((a, b) => { resolve = a; reject = b }); return { promise, resolve, reject } }
}
const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { identify } = await import('@libp2p/identify')
const { ping } = await import('@libp2p/ping')
const { multiaddr } = await import('@multiformats/multiaddr')

const target = multiaddr(process.argv[2])
const size = Number(process.argv[3] ?? 64 * 1024 * 1024)
const node = await createLibp2p({ transports: [tcp()], connectionEncrypters: [noise()], streamMuxers: [yamux()], services: { identify: identify(), ping: ping() } })
let closed = 0
node.addEventListener('connection:close', () => { closed++ })
const conn = await node.dial(target)
const stream = await conn.newStream('/igor/migrate/1.0.0')
const buf = new Uint8Array(4 + size)
new DataView(buf.buffer).setUint32(0, size)
buf.fill(0x61, 4)
const t0 = Date.now()
try {
  if (!stream.send(buf)) await stream.onDrain({ signal: AbortSignal.timeout(120000) })
  await stream.close({ signal: AbortSignal.timeout(120000) })
  console.log(`sent ${size} bytes in one bulk write in ${Date.now() - t0} ms`)
} catch (e) {
  console.log(`send failed after ${Date.now() - t0} ms: ${e.message}`)
}
await new Promise(r => setTimeout(r, 1000))
console.log(`connection status ${conn.status}, connections closed so far: ${closed}`)
try {
  const rtt = await node.services.ping.ping(target, { signal: AbortSignal.timeout(10000) })
  console.log(`ping after: ${rtt} ms`)
} catch (e) { console.log(`ping after failed: ${e.message}`) }
await node.stop()
