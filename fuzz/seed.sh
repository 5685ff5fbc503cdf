#!/usr/bin/env bash
# Seeds every target's corpus from the real QEMU streams and schema dumps in
# compat-tests/fixtures and from a stream this project writes (the snapshot example).
set -euo pipefail
cd "$(dirname "$0")"
fixtures=../compat-tests/fixtures/qemu-10.0.2
for t in load_stream decode records ram_load device_load schema_check xbzrle multifd_packet multifd_channel postcopy_incoming; do mkdir -p corpus/$t; done
for f in "$fixtures"/*.mig; do
    cp "$f" corpus/decode/
    cp "$f" corpus/records/
    # load_stream's first byte holds the options; 0 = configuration and footers.
    { printf '\0'; cat "$f"; } > "corpus/load_stream/$(basename "$f")"
done
# load_stream with bit 2 (mapped-ram) on: QEMU's mapped-ram snapshot.
{ printf '\4'; cat ../compat-tests/fixtures/qemu-10.0.2-mapped-ram/mapped-ram.mig; } > corpus/load_stream/mapped-ram.mig
cp ../compat-tests/fixtures/qemu-10.0.2-mapped-ram/mapped-ram.mig corpus/decode/
(cd .. && cargo run -q --release -p vmstate-examples --example snapshot -- save fuzz/corpus/decode/snapshot.mig >/dev/null)
cp corpus/decode/snapshot.mig corpus/records/
{ printf '\0'; cat corpus/decode/snapshot.mig; } > corpus/load_stream/snapshot.mig
for f in "$fixtures"/vmstate-pc-*.json ../compat-tests/fixtures/evolving/*.json; do
    cp "$f" corpus/schema_check/
done
cp ../compat-tests/fixtures/qemu-10.0.2-multifd/channel*.bin corpus/multifd_packet/
for f in corpus/multifd_packet/channel*.bin; do tail -c +65 "$f" > "$f.packets"; done
# multifd_channel: mode 0 with QEMU's channels as they are (plain, zstd, zlib); modes 1 (zlib) and 2
# (zstd) with text to compress and no damage.
for f in ../compat-tests/fixtures/qemu-10.0.2-multifd/channel*.bin \
    ../compat-tests/fixtures/qemu-10.0.2-multifd-compressed/*/channel*.bin; do
    name=$(basename "$(dirname "$f")")-$(basename "$f")
    { printf '\0'; cat "$f"; } > "corpus/multifd_channel/raw-$name"
done
for m in 1 2; do
    { printf "\\$(printf %o $m)"; head -c 600 ../README.md; printf '\377\377\0\377\377\0\377\377\0\377\377\0'; } \
        > corpus/multifd_channel/text-$m.bin
done
# QEMU 10.0.2's postcopy stream for the decoder and the record reader.
cp ../compat-tests/fixtures/qemu-10.0.2-postcopy/postcopy.mig corpus/decode/
cp ../compat-tests/fixtures/qemu-10.0.2-postcopy/postcopy.mig corpus/records/
# postcopy_incoming: a be16 length, that many bytes for the postcopy-preempt channel,
# then what follows the prologue the target writes on the main stream (see its source):
# a discard, the package (LISTEN, PING 3, RUN), a PART with a zero and a full page, END,
# EOF. One seed without preempt bytes, one with two page records on the channel.
python3 - <<'PY'
import struct
def cmd(n, data=b""): return b"\x08" + struct.pack(">HH", n, len(data)) + data
def rec(off, flags, name=None): return struct.pack(">Q", off | flags) + (bytes([len(name)]) + name if name else b"")
discard = cmd(6, b"\x00\x06pc.ram\x00" + struct.pack(">QQ", 0, 8192))
package = cmd(4) + cmd(2, struct.pack(">I", 3)) + cmd(5)
part = b"\x02" + struct.pack(">I", 0) + rec(5 * 4096, 0x02, b"pc.ram") + b"\x00" \
    + rec(0, 0x08, b"vram") + bytes(range(256)) * 16 + rec(0, 0x10) + b"\x7e" + struct.pack(">I", 0)
end = b"\x03" + struct.pack(">I", 0) + rec(0, 0x10) + b"\x7e" + struct.pack(">I", 0)
seed = discard + cmd(2, struct.pack(">I", 2)) + cmd(7, struct.pack(">I", len(package))) + package + part + end + b"\x00"
open("corpus/postcopy_incoming/switch.bin", "wb").write(b"\x00\x00" + seed)
preempt = rec(0, 0x08, b"pc.ram") + bytes(range(256)) * 16 + rec(4096, 0x02 | 0x20) + b"\x00"
open("corpus/postcopy_incoming/preempt.bin", "wb").write(struct.pack(">H", len(preempt)) + preempt + seed)
PY
echo "seeded: $(ls corpus/*/ | wc -l) files"
