# Shared by the end-to-end tests: sourced with BUILD_DIR and SOURCE_DIR set.
fail() { echo "FAIL: $*" >&2; exit 1; }

# Token shards of the fortunes corpus: the prepared ones, else made into $1.
ensure_shards() {
  local dir=$SOURCE_DIR/data/shards
  if [[ ! -f $dir/fortunes_train.tok || ! -f $dir/fortunes_val.tok ]]; then
    dir=$1/shards
    /usr/bin/python3 "$SOURCE_DIR/data/prepare_fortunes.py" --out "$dir" >/dev/null
  fi
  SHARDS=$dir
}

# The Fashion-MNIST IDX files of the Debian package dataset-fashion-mnist (installed by
# launch/install-deps.sh).
FASHION_MNIST=/usr/share/datasets/fashion-mnist
require_fashion_mnist() {
  [[ -f $FASHION_MNIST/train-images-idx3-ubyte.gz ]] ||
    fail "Fashion-MNIST is missing under $FASHION_MNIST (apt-get install dataset-fashion-mnist)"
}

# compare_layouts NAME "DP TP EP [ETP],..." "EXTRA" -- ARGS...: trains ARGS on one
# process ($tmp/NAME-1), then under mpirun at every layout with the overrides EXTRA (a
# space-separated list, may be empty), and requires the same run at each
# (tests/e2e/compare_runs.py: loss to relative 1e-5 at every step, aux losses, grad
# norms, expert loads, validation losses, weights to 1e-5). Uses $tmp, $BUILD_DIR,
# $SOURCE_DIR and the array `common` of overrides every run gets; an array
# `compare_options`, when set, adds options of compare_runs.py.
compare_layouts() {
  local name=$1 layouts=$2 extra=$3; shift 4
  local -a more
  read -r -a more <<<"$extra"
  "$BUILD_DIR/moe-train" "${common[@]}" "$@" --run.dir="$tmp/$name-1" \
    >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; fail "single-process run ($name)"; }
  local dp tp ep etp dir what
  while read -r dp tp ep etp; do
    etp=${etp:-1}
    what="$name${extra:+ ($extra)} dp=$dp tp=$tp ep=$ep etp=$etp"
    dir=$tmp/$name-dp$dp-tp$tp-ep$ep-etp$etp
    "$SOURCE_DIR/launch/mpirun.sh" -np $((dp * tp)) "$BUILD_DIR/moe-train" "${common[@]}" "$@" \
      --parallel.dp="$dp" --parallel.tp="$tp" --parallel.ep="$ep" --parallel.etp="$etp" \
      "${more[@]}" --run.dir="$dir" </dev/null >/dev/null 2>"$tmp/err" \
      || { cat "$tmp/err"; fail "mpirun ($what)"; }
    /usr/bin/python3 "$SOURCE_DIR/tests/e2e/compare_runs.py" "$tmp/$name-1" "$dir" "$what" \
      --rtol 1e-5 --weights ${compare_options[@]+"${compare_options[@]}"} || fail "$what"
  done < <(tr ',' '\n' <<<"$layouts")
}

# train_per_dispatcher NAME NP G EP "D1 D2 ..." -- ARGS...: trains ARGS under mpirun with
# dp = NP, ep = EP, G ranks per node, once with each moe.dispatcher Di, into
# $tmp/NAME-Di. Uses $tmp, $BUILD_DIR, $SOURCE_DIR and the array `common`.
train_per_dispatcher() {
  local name=$1 np=$2 g=$3 ep=$4 dispatchers=$5; shift 6
  local d
  for d in $dispatchers; do
    "$SOURCE_DIR/launch/mpirun.sh" -np "$np" "$BUILD_DIR/moe-train" "${common[@]}" "$@" \
      --parallel.dp="$np" --parallel.ep="$ep" --parallel.ranks_per_node="$g" \
      --moe.dispatcher="$d" --run.dir="$tmp/$name-$d" </dev/null >/dev/null 2>"$tmp/err" \
      || { cat "$tmp/err"; fail "$name: mpirun -np $np with $d"; }
  done
}

# train_run RUN_DIR ARGS...: moe-train into RUN_DIR, its stdout and stderr in RUN_DIR.out
# and RUN_DIR.err; a failure shows the error and fails the test.
train_run() {
  local dir=$1; shift
  "$BUILD_DIR/moe-train" --run.dir="$dir" "$@" >"$dir.out" 2>"$dir.err" ||
    { cat "$dir.err"; fail "moe-train --run.dir=$dir $*"; }
}

# compare REFERENCE_DIR RUN_DIR LABEL [OPTIONS...]: tests/e2e/compare_runs.py, failing
# with LABEL.
compare() { /usr/bin/python3 "$SOURCE_DIR/tests/e2e/compare_runs.py" "$@" || fail "$3"; }

# train_dp_ep DP EP RUN_DIR ARGS...: trains the array `common` plus ARGS on one process
# when DP is 1, else under mpirun -np DP at (dp, ep) = (DP, EP). The final record (stdout)
# goes to RUN_DIR.final; stderr to $tmp/err, shown when the run fails.
train_dp_ep() {
  local dp=$1 ep=$2 dir=$3; shift 3
  if [[ $dp == 1 ]]; then
    "$BUILD_DIR/moe-train" "${common[@]}" --run.dir="$dir" "$@" >"$dir.final" 2>"$tmp/err"
  else
    "$SOURCE_DIR/launch/mpirun.sh" -np "$dp" "$BUILD_DIR/moe-train" "${common[@]}" \
      --parallel.dp="$dp" --parallel.ep="$ep" --run.dir="$dir" "$@" </dev/null \
      >"$dir.final" 2>"$tmp/err"
  fi || { cat "$tmp/err"; fail "dp $dp ep $ep: moe-train $*"; }
}
