// The texts tuya-cloudcutter really prints, copied from its source (main branch, commit 0018fc9,
// 2026-01-06). File and line of each are noted. Used by the fake tuya-cloudcutter.sh and exported
// through test/fakes.ts so flash.ts's diagnosis tests assert against the same strings.

/** Failure lines by outcome, verbatim, in the order the real run prints them. Exit code 1 for all. */
export const CLOUDCUTTER_MESSAGES = Object.freeze({
  // common_run.sh:129-132 (after the second AP scan, when the AP name does not start with "A-")
  exploit: Object.freeze(['[!] The profile you selected did not result in a successful exploit.']),
  // src/get_input.py:448-451 (validate-firmware-file, to stderr inside docker); the script then exits 1
  // silently (common_run.sh:43-45). Full line: chipMismatchLine(file, chip).
  chip: Object.freeze(['is not valid for the chosen profile type of']),
  // common.sh:105 (wifi_connect, after 5 failed connects to an AP it DID find), then common_run.sh:76
  ap: Object.freeze(['Error, could not connect to SSID.', 'Failed to connect, please run this script again']),
  // common.sh:124 (docker build failed)
  docker: Object.freeze(['Failed to build Docker image, stopping script']),
  // common.sh:12-13 (no -w and no wifi device in `nmcli device status`)
  adapter: Object.freeze([
    "[!] Unable to auto-detect wifi adapter.  Please use the '-w' argument to pass in a wifi adapter.",
    "See './tuya-cloudcutter.sh -h' for more information.",
  ]),
  // tuya-cloudcutter.sh:146-149 (the update_firmware container failed)
  ota: Object.freeze([
    'Oh no, something went wrong with updating firmware! Try again I guess...',
    'If you need to report an issue, please run with the -v flag and supply the full log of that attempt.',
  ]),
  // Not an outcome: what a `-p SLUG` without usable offline JSON prints in a world without network.
  // get_input.py:327 (only when the dir exists), :35 + :42 (a 404 prints BOTH: the bare `except:` catches
  // the SystemExit of exit(1)), then common_run.sh:14.
  profile: Object.freeze([
    'Custom device or profile is not present, attempting to download from API.',
    'The specified device does not exist in the API.',
    'API request to https://tuya-cloudcutter.github.io/api/devices/SLUG.json timed out. Make sure you have an Internet connection and the path is not blocked by a firewall.',
    'Failed to choose a profile, please run this script again',
  ]),
  // Not an outcome: tuya-cloudcutter.sh:66-68, -s together with -f (before anything else runs)
  detachAndFlash: Object.freeze([
    'You have supplied arguments for both detaching and flashing.  Please only include the arguments for your desired action.',
    "Please see './tuya-cloudcutter.sh -h' for more information.",
  ]),
  // Not an outcome: safety_checks.sh:20 (a port cloudcutter needs is taken and the answer was not y/s)
  portBusy: Object.freeze(['Aborting due to occupied port']),
  // Not an outcome: common_run.sh:93 (the exploit container failed, e.g. a profile without "data")
  exploitCrashed: Object.freeze(['Oh no, something went wrong with running the exploit! Try again I guess...']),
});

/** Other real lines (or line prefixes) of a flash run, in the order they appear. */
export const CLOUDCUTTER_LINES = Object.freeze({
  loading: 'Loading options, please wait...', // tuya-cloudcutter.sh:98
  buildingImage: 'Building cloudcutter docker image', // common.sh:135
  builtImage: 'Successfully built docker image', // common.sh:137
  safetyStart: 'Performing safety checks to make sure all required ports are available', // safety_checks.sh:81
  safetyDone: 'Safety checks complete.', // safety_checks.sh:93
  selectedDevice: 'Selected Device Slug: ', // common_run.sh:50
  selectedProfile: 'Selected Profile: ', // common_run.sh:51
  selectedFirmware: 'Selected Firmware: ', // common_run.sh:53
  placeInApMode: 'Place your device in AP (slow blink) mode.  This can usually be accomplished by either:', // common_run.sh:67
  scanning: 'Scanning for open Tuya SmartLife AP', // common.sh:63 (+ " <-o SSID>" when -o is given)
  found: 'Found access point name: ', // common.sh:92, `Found access point name: "SmartLife-1A2B", trying to connect...`
  connected: 'Connected to access point.', // common.sh:116
  exploitStart: 'Running initial exploit toolchain...', // common_run.sh:83
  powerCycle: 'Power cycle and place your device in AP (slow blink) mode again.  This can usually be accomplished by either:', // common_run.sh:102
  joiningFlashAp: "Device is connecting to 'cloudcutterflash' access point. Passphrase for the AP is 'abcdabcd' (without ')", // common_run.sh:135
  flashing: 'Flashing custom firmware...', // tuya-cloudcutter.sh:136
  progress: 'Firmware update progress: ', // src/cloudcutter/protocol/mqtt.py:95, `Firmware update progress: 42%`
  nearlyComplete: 'Firmware file has been sent and MQTT reported a progress of nearly complete.', // mqtt.py:107
  complete: 'Flashing should be complete.  It takes about 15 seconds for the device to reboot and verify the flash was valid.', // mqtt.py:109
  mac: 'Device MAC address: ', // mqtt.py:111, `Device MAC address: d8:1f:12:3a:4b:5c`
  apWarning: '[!] WARNING: Selected wifi AP support: ', // common.sh:21
  apWarningPrompt: 'Press any key to continue, or CTRL+C to exit', // common.sh:23 (shown only on a terminal)
  notATty: 'the input device is not a TTY', // the docker client, for `docker run -ti` without a terminal
  dot: '.', // common.sh:70, one per scan that did not find the AP (the loop has no timeout)
  skipping: 'Skipping...', // safety_checks.sh:16 (answer S to the port question)
  // safety_checks.sh:56-59, when /etc/modprobe.d/blacklist-rtl8192cu.conf exists
  blacklist: Object.freeze([
    'Detected /etc/modprobe.d/blacklist-rtl8192cu.conf',
    'This has been known to cause kernel panic in hostapd',
    'See https://github.com/ct-Open-Source/tuya-convert/issues/373',
  ]),
  blacklistQuestion: 'Do you wish to remove this file? [y/N] ', // safety_checks.sh:59 (read -n 1)
  // safety_checks.sh:69-70, when `aa-enabled` says Yes (Ubuntu ships it in the apparmor package)
  apparmor: Object.freeze(['Detected app armour',
    'This has been known to block hostapd, which is required to complete the exploit']),
  // safety_checks.sh:71 (read -n 1; only y acts)
  apparmorQuestion: 'Do you wish to stop the app armour service? [y/N] ',
  // safety_checks.sh:75
  apparmorOff: 'AppArmour has been turned off.  ' +
    'You will need to manually restart it or reboot your OS for it to turn back on.',
  // tuya-cloudcutter.sh:139
  waitForDevice: "Wait for up to 10-120 seconds for the device to connect to 'cloudcutterflash'. " +
    'This script will then show the firmware upgrade requests sent by the device.',
  // src/setup_apmode.sh:94
  stuckHint: 'If your device gets stuck here with no progress after several (at least two) minutes, see ' +
    'https://github.com/tuya-cloudcutter/tuya-cloudcutter/wiki/FAQ#my-device-gets-stuck-after-dhcp-what-can-i-do ' +
    'for additional steps',
  // src/cloudcutter/protocol/handlers.py:155,
  // `[Firmware Upload] /files/NAME send complete, request range: bytes=0-N/SIZE`
  sendComplete: '[Firmware Upload] /files/',
  // mqtt.py:110
  pleaseWait: 'Please wait about 30 seconds then look for signs of activity from the firmware you supplied ' +
    '(either watch for AP mode or check if it joined your network).',
});

/**
 * safety_checks.sh:13, `read -p "Do you wish to terminate $process_name? [y/N] " -n 1 -r`: y stops (:19-36), S skips
 * (:15), anything else aborts (:20).
 */
export function portQuestion(processName) {
  return `Do you wish to terminate ${processName}? [y/N] `;
}

/** The real chip-mismatch line (get_input.py:449). `chip` as cloudcutter prints it: upper case. */
export function chipMismatchLine(file, chip) {
  return `The firmware file supplied (${file}) is not valid for the chosen profile type of ${String(chip).toUpperCase()}`;
}
