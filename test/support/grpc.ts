/**
 * gRPC and gRPC-Web framing for tests that write requests by hand.
 */

/**
 * One length-prefixed message: a flags byte (0x01 compressed, 0x80 gRPC-Web trailer), the length
 * (big-endian uint32) and the message. `declared` writes another length than the message's (a
 * malformed frame).
 */
export function envelope(message: Uint8Array, flags = 0, declared = message.length): Buffer {
  const head = Buffer.alloc(5);
  head[0] = flags;
  head.writeUInt32BE(declared >>> 0, 1);
  return Buffer.concat([head, message]);
}
