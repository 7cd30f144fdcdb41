// Test/benchmark helper (not exported from index.ts): EchoService routes for a real server.
import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import { EchoService } from "@nanobill/contracts/nanobill/bench/v1/echo_pb";

export interface EchoHooks {
  /** Called inside Echo before replying (block, throw, inspect ctx). */
  onEcho?: (text: string, ctx: HandlerContext) => unknown | Promise<unknown>;
  /** Called inside EchoStream before each message (block, throw). */
  onStream?: (text: string, index: number) => unknown | Promise<unknown>;
}

export function echoRoutes(hooks: EchoHooks = {}): (router: ConnectRouter) => void {
  return (router) => {
    router.service(EchoService, {
      async echo(req, ctx) {
        if (hooks.onEcho) await hooks.onEcho(req.text, ctx);
        return { text: req.text, payload: req.payload };
      },
      async *echoStream(req) {
        for (let i = 0; i < req.count; i++) {
          if (hooks.onStream) await hooks.onStream(req.text, i);
          yield { text: req.text, index: i };
        }
      },
    });
  };
}
