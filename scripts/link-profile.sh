#!/usr/bin/env bash
# Make `snakemake --profile slurm` (and `--profile local`) resolve from the repo root.
#
# Usage: scripts/link-profile.sh [NAME ...]        (default: slurm)
#        FORCE=1 scripts/link-profile.sh slurm      (replace a different existing profile)
#
# Snakemake looks a bare profile NAME up in ./NAME, ~/.config/snakemake/NAME and /etc/xdg/snakemake/NAME, never
# under workflow/profiles/ (stack-facts §7). A `./slurm` symlink in the repo root would work but clutters it, so we
# link the user config dir instead: ~/.config/snakemake/NAME -> <repo>/workflow/profiles/NAME.
# Idempotent; refuses to clobber a different existing profile (file, directory or link) unless FORCE=1.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
CONFIG_DIR="${XDG_CONFIG_HOME:-$HOME/.config}/snakemake"

link_one() {
    local name=$1 target link current force=${FORCE:-0}
    target="$REPO/workflow/profiles/$name"
    link="$CONFIG_DIR/$name"
    [[ -f $target/config.yaml ]] || { echo "link-profile: no profile at $target/config.yaml" >&2; return 1; }
    mkdir -p "$CONFIG_DIR"
    if [[ -L $link ]]; then
        current=$(readlink "$link")
        if [[ $current == "$target" ]]; then
            echo "link-profile: $link -> $target (already linked)"
            return 0
        fi
        # A link to another jarvis checkout's profile (a second clone, a CI clone) is ours to move.
        if [[ $current == */workflow/profiles/$name ]]; then
            echo "link-profile: moving $link from $current to $target"
            force=1
        fi
    fi
    if [[ -e $link || -L $link ]]; then
        if [[ $force != 1 ]]; then
            echo "link-profile: $link exists and is not a link to $target; set FORCE=1 to replace it" >&2
            return 1
        fi
        rm -rf -- "$link"
    fi
    # Create the link under a temporary name, then rename it over: never a moment without a profile.
    ln -s "$target" "$link.tmp.$$"
    mv -T "$link.tmp.$$" "$link"
    echo "link-profile: $link -> $target"
}

rc=0
for name in "${@:-slurm}"; do
    link_one "$name" || rc=1
done
exit $rc
