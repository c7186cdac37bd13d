// Run folders: runs/<yyyyMMdd-HHmmss>-<name>[-N]. Choices:
//   1. The folder is claimed by creating it with mkdir(2), which fails when the name exists; on a collision the next
//      suffix is tried. Checking first and creating later let two runs started in the same second share one folder.
//   2. A run that fails before it wrote anything removes its claimed folder, so bad input leaves no empty run behind.
using System.Runtime.InteropServices;

namespace Workbook;

public static class RunFolders
{
    const int EEXIST = 17; // Linux and macOS

    [DllImport("libc", EntryPoint = "mkdir", SetLastError = true)]
    static extern int mkdir(string path, uint mode);

    /// <summary>Creates and returns a new folder runsRoot/&lt;timestamp&gt;-name (with -2, -3, ... on collision)
    /// that no other process can also claim. <paramref name="option"/> names the option the root came from.</summary>
    public static string Claim(string runsRoot, string name, string option = "--runs")
    {
        try
        {
            Directory.CreateDirectory(runsRoot);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new WorkbookException($"{option} {runsRoot}: cannot create the folder ({e.Message})");
        }
        var stem = Path.Combine(runsRoot, $"{DateTime.Now:yyyyMMdd-HHmmss}-{name}");
        for (int i = 1; i < 10_000; i++)
        {
            var dir = i == 1 ? stem : $"{stem}-{i}";
            if (TryCreate(dir, option, runsRoot))
                return dir;
        }
        throw new WorkbookException($"{option} {runsRoot}: no free run folder name after 10000 tries");
    }

    static bool TryCreate(string dir, string option, string root)
    {
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())
        {
            if (mkdir(dir, Convert.ToUInt32("775", 8)) == 0)
                return true;
            int errno = Marshal.GetLastPInvokeError();
            if (errno == EEXIST)
                return false;
            var why = Marshal.GetPInvokeErrorMessage(errno);
            throw new WorkbookException($"{option} {root}: cannot create a run folder in it ({why})");
        }
        // elsewhere (not a supported platform for libtorch here): check-then-create, not atomic
        if (Directory.Exists(dir) || File.Exists(dir))
            return false;
        Directory.CreateDirectory(dir);
        return true;
    }

    /// <summary>Deletes the folder if it holds no files (empty sub-folders count as nothing): the run wrote
    /// nothing.</summary>
    public static void RemoveIfEmpty(string dir)
    {
        try
        {
            if (Directory.Exists(dir) && !Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories).Any())
                Directory.Delete(dir, true);
        }
        // best effort: the error that got us here matters more
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }
}
