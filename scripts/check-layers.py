#!/usr/bin/env python3
"""check-layers: every #include "..." in common/ points down (or sideways) a layer.

common/ is cut into layer folders, bottom first (README "Where things live"; the order is the
Makefile's LAYERS line unless given on the command line):

    core ops media model cuda_emu cuda convert train wire serve

Includes are flat (#include "jb_err.h"; one -I per layer folder), so each header name must be
unique across the layers. For every .c/.h/.cu/.cpp file under common/ this resolves each
quoted include the way the compiler does (the including file's folder first, then the layer
folders) and reports, as file:line, an include that
  - points up a layer (the header's layer is above the including file's layer),
  - names a header that no layer folder holds,
and reports a source file that sits directly in common/ or in a folder that is not a layer,
and a header name held by two layers. Exit 0 when clean, 1 on a violation, 64 on bad usage.

Usage: scripts/check-layers.py [--root DIR] [LAYER...]     (make check-layers)
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')
SOURCE_EXT = ('.c', '.h', '.cu', '.cpp', '.hpp', '.cuh')


def makefile_layers(root):
    path = os.path.join(root, 'Makefile')
    try:
        with open(path, encoding='utf-8') as f:
            for line in f:
                m = re.match(r'^LAYERS\s*:?=\s*(.*)$', line)
                if m:
                    return m.group(1).split()
    except OSError as e:
        print(f'check-layers: {path}: {e.strerror}', file=sys.stderr)
        sys.exit(64)
    print(f'check-layers: {path}: no "LAYERS :=" line (give the layers as arguments)',
          file=sys.stderr)
    sys.exit(64)


def main(argv):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args = argv[1:]
    if args[:1] in (['-h'], ['--help']):
        print(__doc__.strip())
        return 0
    if args[:1] == ['--root']:
        if len(args) < 2:
            print('check-layers: --root needs a directory', file=sys.stderr)
            return 64
        root, args = args[1], args[2:]
    common = os.path.join(root, 'common')
    if not os.path.isdir(common):
        print(f'check-layers: {common}: no such directory', file=sys.stderr)
        return 64
    layers = args or makefile_layers(root)
    rank = {name: i for i, name in enumerate(layers)}

    errors = []
    owner = {}      # header name -> layer
    files = []      # (relative path, layer or None)
    for dirpath, dirnames, filenames in os.walk(common):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        parts = os.path.relpath(dirpath, common).split(os.sep)
        layer = None if parts == ['.'] else parts[0]
        for name in sorted(filenames):
            if not name.endswith(SOURCE_EXT):
                continue
            rel = os.path.join(rel_dir, name)
            if layer is None:
                errors.append(f'{rel}: sits directly in common/; move it into a layer folder '
                              f'({" ".join(layers)})')
                continue
            if layer not in rank:
                errors.append(f'{rel}: {layer}/ is not a layer (layers: {" ".join(layers)})')
                continue
            files.append((rel, layer))
            if name.endswith(('.h', '.hpp', '.cuh')):
                if name in owner and owner[name] != layer:
                    errors.append(f'{rel}: header name also in common/{owner[name]}/ '
                                  f'(includes are flat: names must be unique)')
                owner.setdefault(name, layer)

    n_includes = 0
    for rel, layer in files:
        here = os.path.dirname(os.path.join(root, rel))
        with open(os.path.join(root, rel), encoding='utf-8', errors='replace') as f:
            for lineno, line in enumerate(f, 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                n_includes += 1
                inc = m.group(1)
                if os.path.isfile(os.path.join(here, inc)):
                    target = layer      # the including file's own folder
                elif inc in owner:
                    target = owner[inc]
                else:
                    errors.append(f'{rel}:{lineno}: #include "{inc}": no layer folder holds it')
                    continue
                if rank[target] > rank[layer]:
                    errors.append(f'{rel}:{lineno}: #include "{inc}" points up: {layer}/ '
                                  f'may not include {target}/ (order, bottom first: '
                                  f'{" ".join(layers)})')

    for e in errors:
        print(e)
    print(f'check-layers: {len(files)} files, {n_includes} includes, '
          f'{len(errors)} violation{"" if len(errors) == 1 else "s"}')
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
