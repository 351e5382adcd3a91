import { sftpConformance } from "./sftp_conformance.ts";

sftpConformance("openssh", "OpenSSH");
