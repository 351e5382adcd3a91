/**
 * Merges the socket writes ssh2 makes within one turn of the event loop into
 * one. ssh2 writes every SSH packet in up to three pieces; with Nagle's
 * algorithm off (which request/reply latency needs) each piece would be its
 * own system call and TCP segment.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { Socket } from "node:net";

type Write = (chunk: Uint8Array) => boolean;

/** A TCP socket, not yet connected, whose writes are coalesced and sent without delay. */
export function coalescingSocket(): Socket {
  const socket = new Socket();
  let write: Write = socket.write.bind(socket) as Write;
  const end = socket.end.bind(socket) as (...args: unknown[]) => Socket;
  let pending: Uint8Array[] = [];
  let scheduled = false;

  const flush = () => {
    scheduled = false;
    const chunks = pending;
    pending = [];
    if (chunks.length === 0 || socket.destroyed || !socket.writable) return;
    write(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
  };
  // ssh2 ignores write()'s result and callback, so deferring within the turn is safe.
  const coalesced = ((chunk: Uint8Array) => {
    pending.push(chunk);
    if (!scheduled) {
      scheduled = true;
      queueMicrotask(flush);
    }
    return true;
  }) as typeof socket.write;

  socket.end = ((...args: unknown[]) => {
    flush(); // A DISCONNECT written just before end() must go first.
    return end(...args);
  }) as typeof socket.end;
  // Deno's Socket replaces its own write() while connecting: wrap the one it
  // has once connected. This listener runs before ssh2's, which writes first.
  socket.once("connect", () => {
    socket.setNoDelay(true);
    write = socket.write.bind(socket) as Write;
    socket.write = coalesced;
  });
  return socket;
}
