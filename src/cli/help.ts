/** Help texts, one per command. */

export const MAIN_HELP = `contentmonster: replicate directories to vessels over SFTP

Usage:
  contentmonster [run]  [--config FILE]           run the daemon
  contentmonster once   [--config FILE] [--timeout SECONDS]
                                                  replicate what is there now, wait, exit
  contentmonster check  [--config FILE]           validate the config, probe every vessel
  contentmonster status [--config FILE] [--json]  is it healthy? vessels, directories, queue
  contentmonster COMMAND --help                   help for one command
  contentmonster --version

Options:
  -c, --config FILE   the settings file (default: ./settings.ini)
  -v, --verbose       log debug messages too
  -h, --help          this help
  -V, --version       the version

Exit status: 0 success, 1 runtime failure, 2 usage or config error.`;

export const COMMAND_HELP: Record<string, string> = {
  run: `contentmonster run [--config FILE]

Watches every [Directory], replicates each new file to every [Vessel] that does
not ignore the directory, and moves it to <Location>/processed/ once every such
vessel holds a verified copy. Runs until SIGTERM or SIGINT; the next start
resumes unfinished work. With [MONSTER] MetricsAddress = HOST:PORT it serves
Prometheus metrics at http://HOST:PORT/metrics.`,
  once: `contentmonster once [--config FILE] [--timeout SECONDS]

Replicates the files present now (and any unfinished work), waits until every
one is delivered and moved to processed/, and exits: 0 when all are done, 1
when a delivery failed for good or SECONDS passed first.`,
  check: `contentmonster check [--config FILE]

Validates the config and probes every vessel: connection, host key,
authentication, SFTP, posix-rename, cat and sha256, TempDir and destinations
writable, free space. Exit 0 when all pass, 1 naming each failing vessel.`,
  status: `contentmonster status [--config FILE] [--json]

Answers "is it healthy?" from the state database alone, so it works beside a
running daemon. Per vessel: its state (idle, connected, backing off until T,
failing and needing the operator) with the error and since when, the last
verified delivery, the throughput over the last minute, what is queued and
what failed for good. Per directory: the files waiting and the oldest one's
age. Then the queue per directory and vessel. --json prints the same.`,
};
