/**
 * What a Connect call failed with, for assertions. Pure: usable by the unit tier too.
 */
import { type Code, ConnectError } from "@connectrpc/connect";

/** The Connect code and message a call failed with; `[undefined, ""]` when it succeeded. */
export async function failureOf(p: Promise<unknown>): Promise<[Code | undefined, string]> {
  try {
    await p;
    return [undefined, ""];
  } catch (err) {
    const e = ConnectError.from(err);
    return [e.code, e.rawMessage];
  }
}

/** The Connect code a call failed with; undefined when it succeeded. */
export async function codeOf(p: Promise<unknown>): Promise<Code | undefined> {
  return (await failureOf(p))[0];
}
