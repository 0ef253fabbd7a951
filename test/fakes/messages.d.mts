export declare const CLOUDCUTTER_MESSAGES: Readonly<{
  exploit: readonly string[];
  chip: readonly string[];
  ap: readonly string[];
  docker: readonly string[];
  adapter: readonly string[];
  ota: readonly string[];
  profile: readonly string[];
  detachAndFlash: readonly string[];
  portBusy: readonly string[];
  exploitCrashed: readonly string[];
}>;

export declare const CLOUDCUTTER_LINES: Readonly<{
  loading: string;
  buildingImage: string;
  builtImage: string;
  safetyStart: string;
  safetyDone: string;
  selectedDevice: string;
  selectedProfile: string;
  selectedFirmware: string;
  placeInApMode: string;
  scanning: string;
  found: string;
  connected: string;
  exploitStart: string;
  powerCycle: string;
  joiningFlashAp: string;
  flashing: string;
  progress: string;
  nearlyComplete: string;
  complete: string;
  mac: string;
  apWarning: string;
  apWarningPrompt: string;
  notATty: string;
  dot: string;
  skipping: string;
  blacklist: readonly string[];
  blacklistQuestion: string;
  apparmor: readonly string[];
  apparmorQuestion: string;
  apparmorOff: string;
  waitForDevice: string;
  stuckHint: string;
  sendComplete: string;
  pleaseWait: string;
}>;

export declare function portQuestion(processName: string): string;

export declare function chipMismatchLine(file: string, chip: string): string;
