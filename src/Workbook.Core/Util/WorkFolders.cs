// Hidden work folders (.tmp-...-PID-GUID) that become real folders by one rename when complete. A process killed
// mid-write leaves its work folder behind; the next start deletes those whose process is gone. The process id in the
// name is what keeps a live process's folder safe: a folder is never deleted while the process that owns it runs.
namespace Workbook;

public static class WorkFolders
{
    /// <summary>A work folder name for this process: .tmp-{kind}-{id}-{PID}-{GUID} (kind and id without
    /// dashes).</summary>
    public static string Name(string kind, string id) =>
        $".tmp-{kind}-{id.Replace('-', 'm')}-{Environment.ProcessId}-{Guid.NewGuid():N}";

    /// <summary>The owner's process id of a work folder named by <see cref="Name"/>; null for a name without one
    /// (.tmp-{kind}-{id}-{GUID}, written before process ids were recorded: nobody owns it any more).</summary>
    public static int? Owner(string folder)
    {
        var parts = Path.GetFileName(folder).Split('-');
        return parts.Length == 5 && int.TryParse(parts[3], out var pid) && pid > 0 ? pid : null;
    }

    /// <summary>Deletes the folders of <paramref name="dir"/> matching <paramref name="pattern"/> whose owning process
    /// is gone; a live process's folder is left alone.</summary>
    public static void RemoveAbandoned(string dir, string pattern)
    {
        if (!Directory.Exists(dir))
            return;
        foreach (var d in Directory.GetDirectories(dir, pattern))
            if (Owner(d) is not { } pid || !ProcessAlive(pid))
                try
                {
                    Directory.Delete(d, true);
                }
                catch (IOException) { } // another process cleaning it at the same time
    }

    public static bool ProcessAlive(int pid)
    {
        try
        {
            using var p = System.Diagnostics.Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }
}
