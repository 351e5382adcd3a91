import { sftpConformance } from "./sftp_conformance.ts";

sftpConformance("dropbear", "Dropbear", "openssh");
sftpConformance("dropbear", "Dropbear", "builtin");
