#!/bin/sh
# Fills fuzz/corpus/<target>/ (gitignored) from the committed example and golden files.
# Run from anywhere; safe to re-run (copies over existing seeds, keeps what fuzzing found).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
golden="$root/medtech-mapping/tests/golden"

mkdir -p "$here/corpus/fhir_json" "$here/corpus/medtech_template" "$here/corpus/medtech_message" "$here/corpus/dataverse_webhook" "$here/corpus/medtech_pipeline"

# fhir_json: the committed FHIR R4 examples (one per resource type).
cp "$root"/fhir-model/tests/data/*.json "$here/corpus/fhir_json/"

# medtech_template: every golden device mapping, plus the FHIR destination mapping seeds.
for d in "$golden"/*/; do
    case=$(basename "$d")
    cp "$d/devicecontent.json" "$here/corpus/medtech_template/$case-devicecontent.json"
    for f in message.json event.json; do
        [ -f "$d/$f" ] && cp "$d/$f" "$here/corpus/medtech_message/$case-$f"
    done
done
cp "$here"/seeds/medtech_template/*.json "$here/corpus/medtech_template/"

# medtech_pipeline: each golden transform case as `device \0 fhir \0 message \0 message ...`,
# and its messages alone after a byte picking a golden template pair (see the target).
i=0
for d in "$root"/medtech-mapping/tests/golden-transform/*/; do
    case=$(basename "$d")
    {
        tr -d '\000' < "$d/devicecontent.json"; printf '\000'
        tr -d '\000' < "$d/fhirmapping.json"
        for m in "$d"/message*.json; do printf '\000'; tr -d '\n\000' < "$m"; done
    } > "$here/corpus/medtech_pipeline/$case-full"
    {
        printf "\\$(printf '%03o' "$i")"
        for m in "$d"/message*.json; do tr -d '\n\000' < "$m"; printf '\n'; done
    } > "$here/corpus/medtech_pipeline/$case-messages"
    i=$((i + 1))
done
cp "$here"/seeds/medtech_pipeline/* "$here/corpus/medtech_pipeline/"

# dataverse_webhook: RemoteExecutionContext bodies in the shape Microsoft Learn documents.
cp "$here"/seeds/dataverse_webhook/*.json "$here/corpus/dataverse_webhook/"

for t in fhir_json medtech_template medtech_message dataverse_webhook medtech_pipeline; do
    echo "$t: $(ls "$here/corpus/$t" | wc -l) files"
done
