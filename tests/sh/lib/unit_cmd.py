"""unit_cmd.py: the command line systemd would run for a template unit, NUL-separated.

  python3 unit_cmd.py UNIT_FILE INSTANCE ENV_FILE BINDIR STATE_ROOT RUNTIME_ROOT

Follows systemd's rules for what the units use: Environment= lines (KEY=VALUE words)
then the EnvironmentFile (KEY=VALUE lines, '#' comments), the specifiers %i %p %H %S %t
%%, and in ExecStart "${VAR}" as one word and "$VAR" split on whitespace.
"""
import re
import socket
import sys

unit, inst, envfile, bindir, state, runtime = sys.argv[1:7]
name = unit.rsplit("/", 1)[-1]
prefix = name.split("@", 1)[0]
spec = {"i": inst, "p": prefix, "H": socket.gethostname(), "S": state, "t": runtime, "%": "%"}


def specifiers(s):
    return re.sub(r"%(.)", lambda m: spec[m.group(1)], s)


env = {}
exec_start = None
for line in open(unit):
    line = line.strip()
    if line.startswith("Environment="):
        for word in specifiers(line[len("Environment="):]).split():
            k, v = word.split("=", 1)
            env[k] = v
    elif line.startswith("ExecStart="):
        exec_start = specifiers(line[len("ExecStart="):]).replace("@BINDIR@", bindir)
for line in open(envfile):
    line = line.strip()
    if line and not line.startswith("#"):
        k, v = line.split("=", 1)
        env[k] = v.strip("'\"")
argv = []
for word in exec_start.split():
    m = re.fullmatch(r"\$\{(\w+)\}", word)
    if m:
        argv.append(env.get(m.group(1), ""))
        continue
    m = re.fullmatch(r"\$(\w+)", word)
    if m:
        argv.extend(env.get(m.group(1), "").split())
        continue
    argv.append(word)
sys.stdout.write("\0".join(argv) + "\0")
