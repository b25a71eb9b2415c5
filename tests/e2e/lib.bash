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
