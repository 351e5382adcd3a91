/** One replicating process per state database, through the CLI. */
import assert from "node:assert/strict";
import { CliProcess, runCli, Workspace } from "./cli_harness.ts";

Deno.test("a second run or once on the same database exits 1 at once; status and check still work", async () => {
  const ws = await Workspace.create();
  try {
    await ws.mkdir("outbox", "vessel");
    const config = await ws.config(`[MONSTER]
Database = state/cm.db

[Directory outbox]
Location = outbox
Destination = /srv/inbox

[Vessel v]
Transport = local
Root = vessel
`);
    const daemon = new CliProcess(["run", "--config", config]);
    try {
      await daemon.waitForLog("replicating");
      for (const command of ["once", "run"]) {
        const started = Date.now();
        const second = await runCli([command, "--config", config]);
        assert.equal(second.code, 1, second.stderr);
        assert.ok(Date.now() - started < 10_000, `${command} waited for the lock`);
        assert.match(second.stderr, new RegExp(`state/cm\\.db`));
        assert.match(second.stderr, new RegExp(`process ${daemon.pid} `));
      }
      const status = await runCli(["status", "--config", config]);
      assert.equal(status.code, 0, status.stderr);
      const check = await runCli(["check", "--config", config]);
      assert.equal(check.code, 0, check.stderr + check.stdout);
    } finally {
      daemon.kill("SIGTERM");
      assert.equal((await daemon.exited()).code, 0, daemon.log);
    }
    const after = await runCli(["once", "--config", config, "--timeout", "30"]);
    assert.equal(after.code, 0, after.stderr);
  } finally {
    await ws.cleanup();
  }
});
