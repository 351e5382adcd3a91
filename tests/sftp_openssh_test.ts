import { sftpConformance } from "./sftp_conformance.ts";

sftpConformance("openssh", "OpenSSH", "openssh");
sftpConformance("openssh", "OpenSSH", "builtin");
