/**
 * The caller's grant for the operators' services: read from the bearer token of each call.
 */
import type { HandlerContext } from "@connectrpc/connect";
import type { Authenticator, Grant } from "../core/auth.js";

/** Wrap a method of a service so it is given the caller's grant (checked from its token) instead of the call's context. */
export function withGrantOf(auth: Authenticator) {
  return <Req, Res>(fn: (req: Req, grant: Grant) => Promise<Res>) =>
    (req: Req, ctx: HandlerContext): Promise<Res> =>
      fn(req, auth.authenticate(ctx.requestHeader.get("authorization")));
}
