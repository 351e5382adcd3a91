/** Types for the one internal module of ssh2 1.17.0 that `_sftp_pipe.ts` loads. */
declare const sftpModule: {
  SFTP: new (client: unknown, channelInfo: unknown, config: unknown) => unknown;
};
export default sftpModule;
