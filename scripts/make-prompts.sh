#!/usr/bin/env bash
# Regenerates the dial-in gateway's voice prompts: crates/klausur-sip/prompts/<lang>/<name>.wav
# from the texts in crates/klausur-sip/prompts/<lang>.tsv (one "<name><TAB><text>" per line).
#
# Speech comes from espeak-ng (voices "de" and "en"), converted by sox to what the gateway plays
# and embeds: RIFF/WAVE, 8 kHz, mono, G.711 A-law (format tag 6, 8 kB per second of speech; 16-bit
# PCM would double the size of the committed files), peak-normalised to -3 dBFS, with 150 ms of
# silence before and 350 ms after the speech.
#
# Idempotent: the same texts and tool versions give byte-identical files (sox runs in repeatable
# mode without dither), so running it again changes nothing; a .wav whose name is no longer in a
# language's .tsv is removed. Needs espeak-ng and sox (Debian: apt-get install espeak-ng sox).
# The gateway needs neither at run time: the files are compiled into the binary.
#
# Usage: scripts/make-prompts.sh            regenerate every language
#        scripts/make-prompts.sh de         regenerate one language
#        scripts/make-prompts.sh --check    regenerate into a temporary directory and fail if
#                                           anything differs from the committed files
set -euo pipefail
cd "$(dirname "$0")/.."

prompts=crates/klausur-sip/prompts
check=0
langs=()
for arg in "$@"; do
    case "$arg" in
        --check) check=1 ;;
        de | en) langs+=("$arg") ;;
        *) echo "make-prompts: unknown argument: $arg (languages: de en; option: --check)" >&2; exit 2 ;;
    esac
done
[ ${#langs[@]} -gt 0 ] || langs=(de en)

for tool in espeak-ng sox; do
    command -v "$tool" >/dev/null || { echo "make-prompts: $tool is missing (apt-get install espeak-ng sox)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

status=0
for lang in "${langs[@]}"; do
    texts="$prompts/$lang.tsv"
    [ -f "$texts" ] || { echo "make-prompts: $texts is missing" >&2; exit 1; }
    mkdir -p "$work/$lang"
    names=()
    while IFS=$'\t' read -r name text; do
        case "$name" in '' | '#'*) continue ;; esac
        if [[ ! "$name" =~ ^[a-z0-9_]+$ ]] || [ -z "$text" ]; then
            echo "make-prompts: $texts: bad line for \"$name\"" >&2; exit 1
        fi
        names+=("$name")
        espeak-ng -v "$lang" -w "$work/raw.wav" -- "$text"
        sox -R -D "$work/raw.wav" -c 1 -e a-law -b 8 "$work/$lang/$name.wav" \
            rate 8000 norm -3 pad 0.15 0.35
    done <"$texts"

    if [ "$check" = 1 ]; then
        for name in "${names[@]}"; do
            if ! cmp -s "$work/$lang/$name.wav" "$prompts/$lang/$name.wav"; then
                echo "make-prompts: $prompts/$lang/$name.wav is out of date" >&2; status=1
            fi
        done
        for f in "$prompts/$lang"/*.wav; do
            [ -e "$f" ] || continue
            [ -e "$work/$lang/$(basename "$f")" ] || { echo "make-prompts: $f is not in $texts" >&2; status=1; }
        done
    else
        mkdir -p "$prompts/$lang"
        for f in "$prompts/$lang"/*.wav; do
            [ -e "$f" ] || continue
            [ -e "$work/$lang/$(basename "$f")" ] || rm -f -- "$f"
        done
        for name in "${names[@]}"; do
            cmp -s "$work/$lang/$name.wav" "$prompts/$lang/$name.wav" ||
                cp -- "$work/$lang/$name.wav" "$prompts/$lang/$name.wav"
        done
        echo "make-prompts: $lang: ${#names[@]} prompts in $prompts/$lang"
    fi
done
exit "$status"
