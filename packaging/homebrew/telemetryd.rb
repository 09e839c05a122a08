# Homebrew formula for telemetryd: builds the five binaries from the source
# tarball of a release, with their man pages and shell completions, and
# runs the daemon as a per-user service (`brew services start telemetryd`).
#
# Before publishing it in a tap, replace the two placeholders:
#   url     the release's source tarball (the forge's archive of tag vVERSION)
#   sha256  that tarball's SHA-256: `curl -fsSL URL | sha256sum`, or
#           `brew fetch --build-from-source ./telemetryd.rb`, which prints it
# The all-zero sha256 below is deliberately wrong, so that an unedited copy
# fails its download check instead of installing something unverified.
# Syntax-checked by scripts/test-package.sh (`ruby -c`); it has not been run
# by Homebrew (no macOS or Homebrew on the CI machine).
class Telemetryd < Formula
  desc "Opt-in, anonymous usage telemetry collector for command-line tools"
  # PLACEHOLDER: the project's home page and release tarball.
  homepage "https://telemetryd.invalid/"
  url "https://telemetryd.invalid/releases/telemetryd-0.1.0.tar.gz"
  # PLACEHOLDER: replace with the tarball's SHA-256 (see above).
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  license "Apache-2.0"

  depends_on "rust" => :build

  # The crate that holds each binary (cargo install builds one crate at a time).
  CRATES = {
    "daemon" => %w[telemetryd],
    "client" => %w[telemetryctl telemetry-emit],
    "report" => %w[telemetry-report],
    "broker" => %w[telemetry-broker],
  }.freeze

  def install
    CRATES.each_key do |crate|
      system "cargo", "install", *std_cargo_args(path: crate)
    end

    # Man pages and completions come from the binaries themselves
    # (`BINARY --generate-docs KIND`), as scripts/docs.sh makes them.
    man1.mkpath
    CRATES.values.flatten.each do |name|
      system bin/name, "--generate-docs", "man", man1
      generate_completions_from_executable(bin/name, "--generate-docs", shells: [:bash, :zsh, :fish])
    end

    # The example product manifest. The daemon's default search path
    # ($XDG_DATA_DIRS/telemetry/products, default /usr/local/share:/usr/share)
    # finds it under Intel Homebrew's /usr/local; Apple Silicon's /opt/homebrew
    # is on it only if XDG_DATA_DIRS names /opt/homebrew/share. cfdev is also
    # built in, so the daemon has it either way.
    (share/"telemetry/products").install "catalog/cfdev.toml"
    # The unit files and plists `telemetryd install` writes, for reference.
    pkgshare.install "launchd", "systemd"
  end

  def caveats
    <<~EOS
      Nothing is collected until you opt in, per product:
        telemetryctl consent PRODUCT on
      `brew services start telemetryd` keeps a per-user daemon running; without
      it, telemetry-emit starts one on demand that exits when idle.
    EOS
  end

  service do
    run [opt_bin/"telemetryd"]
    keep_alive true
    process_type :background
    log_path var/"log/telemetryd.log"
    error_log_path var/"log/telemetryd.log"
  end

  test do
    CRATES.values.flatten.each do |name|
      assert_equal "#{name} #{version}", shell_output("#{bin}/#{name} --version").strip
    end
  end
end
