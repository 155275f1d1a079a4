namespace HandoffDapr.Service.Tests.Infrastructure;

/// <summary>
/// Makes a file one this process cannot write, until disposed: its read-only attribute, and as root (whom permissions do
/// not stop) the immutable one too, which only root can set (Linux, <c>chattr</c>).
/// </summary>
public sealed class ReadOnlyFile : IDisposable
{
    private readonly string path;
    private readonly bool immutable;

    public ReadOnlyFile(string path)
    {
        this.path = path;
        File.SetAttributes(path, FileAttributes.ReadOnly);
        immutable = OperatingSystem.IsLinux() && Environment.IsPrivilegedProcess && Chattr("+i", path);
    }

    public void Dispose()
    {
        if (immutable)
        {
            Chattr("-i", path);
        }

        File.SetAttributes(path, FileAttributes.Normal);
    }

    private static bool Chattr(string change, string file)
    {
        try
        {
            using var process = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("chattr", [change, file]) { RedirectStandardError = true })!;
            process.WaitForExit();
            return process.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return false;
        }
    }
}
