#!/usr/bin/env bash
# Seeds every target's corpus from the real QEMU streams and schema dumps in
# compat-tests/fixtures and from a stream this project writes (the snapshot example).
set -euo pipefail
cd "$(dirname "$0")"
fixtures=../compat-tests/fixtures/qemu-10.0.2
for t in load_stream decode records ram_load device_load schema_check xbzrle multifd_packet; do mkdir -p corpus/$t; done
for f in "$fixtures"/*.mig; do
    cp "$f" corpus/decode/
    cp "$f" corpus/records/
    # load_stream's first byte holds the options; 0 = configuration and footers.
    { printf '\0'; cat "$f"; } > "corpus/load_stream/$(basename "$f")"
done
(cd .. && cargo run -q --release -p vmstate-examples --example snapshot -- save fuzz/corpus/decode/snapshot.mig >/dev/null)
cp corpus/decode/snapshot.mig corpus/records/
{ printf '\0'; cat corpus/decode/snapshot.mig; } > corpus/load_stream/snapshot.mig
for f in "$fixtures"/vmstate-pc-*.json ../compat-tests/fixtures/evolving/*.json; do
    cp "$f" corpus/schema_check/
done
cp ../compat-tests/fixtures/qemu-10.0.2-multifd/channel*.bin corpus/multifd_packet/
for f in corpus/multifd_packet/channel*.bin; do tail -c +65 "$f" > "$f.packets"; done
echo "seeded: $(ls corpus/*/ | wc -l) files"
