using System.Diagnostics;

namespace HandoffDapr.Service.Tests.Infrastructure;

/// <summary>Debian's headless Chromium (.ci/run installs it), run once per page load, each in a profile of its own.</summary>
internal static class HeadlessChromium
{
    public const string Path = "/usr/bin/chromium";

    /// <summary>Runs Chromium with <paramref name="arguments"/> and returns what it wrote (the DOM, for <c>--dump-dom</c>).</summary>
    /// <param name="profile">The browser's profile folder, to look into afterwards.</param>
    /// <param name="budgetMs">The page's (virtual) time before the DOM is read: the page refreshes every 5 s.</param>
    public static async Task<string> RunAsync(string arguments, string profile, int budgetMs)
    {
        Assert.True(File.Exists(Path), "Chromium is required: apt-get install chromium (.ci/run does this)");
        var start = new ProcessStartInfo(Path,
            $"--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking --disable-component-update --disable-sync --user-data-dir={profile} --virtual-time-budget={budgetMs} {arguments}")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        _ = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(timeout.Token);
        return await stdout;
    }
}
