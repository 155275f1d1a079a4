using System.Runtime.InteropServices;

namespace HandoffDapr.Service.Embedded;

/// <summary>
/// Whether this process may write the data file now, asked of the kernel (<c>access(2)</c>) without opening it. A new
/// SQLite connection cannot tell: SQLite's unix VFS hands it the read-write descriptor an earlier connection left open
/// (kept for the process's locks), and opening the file any other way, then closing it, would drop SQLite's POSIX
/// locks.
/// </summary>
internal static class DataFileAccess
{
    private const int WriteOk = 2;
    private const int NotPermitted = 1; // EPERM: an immutable file, even for root
    private const int AccessDenied = 13; // EACCES: its permissions
    private const int ReadOnlyFileSystem = 30; // EROFS: a read-only mount (the same numbers on Linux and macOS)

    /// <summary>False when the kernel refuses to let this process write it; null when it cannot say (Windows, no file).</summary>
    public static bool? IsWritable(string path)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS())
        {
            return null;
        }

        return Access(path, WriteOk) == 0 ? true
            : Marshal.GetLastPInvokeError() is NotPermitted or AccessDenied or ReadOnlyFileSystem ? false
            : null;
    }

    [DllImport("libc", EntryPoint = "access", SetLastError = true)]
    private static extern int Access([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int mode);
}
