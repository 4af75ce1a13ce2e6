// A TCP proxy on 127.0.0.1 that can be "broken" on demand: every open connection is reset and new
// ones are reset as soon as they arrive, until `restore()`. TLS passes through untouched, so a
// kubeconfig pointed at the proxy still verifies the API server's certificate (SAN IP:127.0.0.1).
import { createConnection, createServer, type Socket } from "node:net";

export interface TcpProxy {
  readonly port: number;
  /** Connections accepted since start (including reset ones). */
  readonly accepted: () => number;
  /** Resets every open connection and refuses service until restore(). */
  break(): void;
  restore(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const open = new Set<Socket>();
  let broken = false;
  let accepted = 0;
  const server = createServer((client) => {
    accepted++;
    if (broken) {
      client.resetAndDestroy();
      return;
    }
    const upstream = createConnection(target);
    open.add(client);
    open.add(upstream);
    const cleanup = () => {
      open.delete(client);
      open.delete(upstream);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", cleanup);
    upstream.on("error", cleanup);
    client.on("close", cleanup);
    upstream.on("close", cleanup);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("proxy has no port");
  return {
    port: address.port,
    accepted: () => accepted,
    break() {
      broken = true;
      for (const socket of open) socket.resetAndDestroy();
      open.clear();
    },
    restore() {
      broken = false;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of open) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
