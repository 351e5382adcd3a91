import { sftpConformance } from "./sftp_conformance.ts";

sftpConformance("dropbear", "Dropbear");
