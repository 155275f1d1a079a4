using HandoffDapr.Service.Tests.Infrastructure;

namespace HandoffDapr.Service.Tests.Operability;

/// <summary>
/// The status page's refreshes in headless Chromium, against a stand-in for <c>GET /runs</c> whose answers change from one
/// refresh to the next (a token revoked, the service failing, an answer slower than the refresh period), which the real
/// service cannot be made to do on cue. The page's own files are served as they are in the source tree.
/// </summary>
public sealed class StatusPageRefreshTests : IDisposable
{
    private const string RunsJson = RunsAnswer.OneRunJson;
    private readonly TempDirectory temp = new();

    [Fact]
    public async Task Status_page_clears_the_runs_it_showed_once_their_token_is_refused()
    {
        using var runs = new RunsStandIn(call => call == 1
            ? RunsAnswer.Json(RunsJson)
            : new RunsAnswer(401, null, null, "Bearer"));

        // The first refresh lists the run; the one 5 s later is refused (the token was rotated or revoked).
        var dom = await RunChromium($"--dump-dom {runs.Address}ui/index.html#token=old-token", budgetMs: 7000);

        Assert.Contains("token was refused", dom);
        Assert.DoesNotContain("acme/privaterepo", dom);
        Assert.DoesNotContain("Updated ", dom);
    }

    [Fact]
    public async Task Status_page_marks_the_runs_it_showed_as_not_current_when_the_service_then_fails()
    {
        using var runs = new RunsStandIn(call => call == 1
            ? RunsAnswer.Json(RunsJson)
            : new RunsAnswer(503, """{"status":503,"detail":"The list of recent runs could not be read. Try again shortly."}""", "application/problem+json", null));

        var dom = await RunChromium($"--dump-dom {runs.Address}ui/index.html", budgetMs: 7000);

        Assert.Contains("Could not load runs (HTTP 503: The list of recent runs could not be read. Try again shortly).", dom);
        // The rows stay (a passing failure should not blank the page) but do not read as current.
        Assert.Contains("acme/privaterepo", dom);
        Assert.DoesNotContain(">Updated ", dom);
        Assert.Contains("not current", dom);
    }

    [Fact]
    public async Task Status_page_sends_no_refresh_while_one_is_still_unanswered()
    {
        // The first answer takes longer than the refresh period: a second request then would only pile up on a slow
        // service, and its answer could land before the first one's (which would then put older runs on the page). The
        // delay is the page's own (a timer around fetch): Chromium's virtual time stands still while a real request is
        // pending, so a slow server could not show it.
        // The page as served, with fetch wrapped to hold the first answer 12 s and to count requests under way.
        using var runs = new RunsStandIn(_ => RunsAnswer.Json(RunsJson), new Dictionary<string, (string, string)>
        {
            ["/ui/slow-first-answer.html"] = ("""
                <script>
                  let requests = 0, underWay = 0, most = 0;
                  const realFetch = window.fetch.bind(window);
                  window.fetch = (url, init) => {
                    const hold = ++requests === 1 ? 12000 : 0;
                    most = Math.max(most, ++underWay);
                    document.body.dataset.requestsAtOnce = String(most);
                    return new Promise(resolve => setTimeout(resolve, hold)).then(() => realFetch(url, init)).finally(() => { underWay--; });
                  };
                </script>
                """, ""),
        });

        var dom = await RunChromium($"--dump-dom {runs.Address}ui/slow-first-answer.html", budgetMs: 15_000);

        Assert.Equal("1", System.Text.RegularExpressions.Regex.Match(dom, "data-requests-at-once=\"(\\d+)\"").Groups[1].Value);
    }

    [Fact]
    public async Task Status_page_drops_the_refreshes_due_while_a_slow_answer_was_awaited()
    {
        // The first answer comes at 12 s (the page's own delay, as above); the refreshes due at 5 s and 10 s were dropped,
        // so the next read is the one due at 15 s, not one sent back to back with the slow answer.
        using var runs = new RunsStandIn(_ => RunsAnswer.Json(RunsJson), new Dictionary<string, (string, string)>
        {
            ["/ui/slow-first-answer.html"] = ("""
                <script>
                  let requests = 0;
                  const realFetch = window.fetch.bind(window);
                  window.fetch = (url, init) => {
                    const hold = ++requests === 1 ? 12000 : 0;
                    return new Promise(resolve => setTimeout(resolve, hold)).then(() => realFetch(url, init));
                  };
                </script>
                """, ""),
        });

        var dom = await RunChromium($"--dump-dom {runs.Address}ui/slow-first-answer.html", budgetMs: 14_000);

        Assert.Contains("acme/privaterepo", dom);
        Assert.Equal(1, runs.Calls);
    }

    [Fact]
    public async Task Status_page_sends_a_token_entered_while_another_is_still_being_tried()
    {
        // The page asks for a token (call 1). A first token is sent (call 2) and its answer is slow; meanwhile the person
        // sends the right one. That one must be tried (call 3 on), and the slow refusal of the first must not drop it.
        // The page as served, with fetch wrapped to hold the second request (the first token's) 4 s, and the form sent
        // twice: a first token at 1 s, the right one at 2 s, while the first is still unanswered. No timer refreshes:
        // the next one would send the right token anyway, so a page that dropped it passed.
        using var runs = new RunsStandIn(call => call >= 3 ? RunsAnswer.Json(RunsJson) : new RunsAnswer(401, null, null, "Bearer"), new Dictionary<string, (string, string)>
        {
            ["/ui/second-token-while-first-tried.html"] = ("""
                <script>
                  window.setInterval = () => 0;
                  let requests = 0;
                  const realFetch = window.fetch.bind(window);
                  window.fetch = (url, init) => {
                    const hold = ++requests === 2 ? 4000 : 0;
                    return new Promise(resolve => setTimeout(resolve, hold)).then(() => realFetch(url, init));
                  };
                  function send(token) {
                    document.getElementById("token").value = token;
                    document.getElementById("token-form").dispatchEvent(new Event("submit", { cancelable: true }));
                  }
                  setTimeout(() => send("first-token"), 1000);
                  setTimeout(() => send("right-token"), 2000);
                </script>
                """, ""),
        });

        var dom = await RunChromium($"--dump-dom {runs.Address}ui/second-token-while-first-tried.html", budgetMs: 10_000);

        Assert.Contains("acme/privaterepo", dom);
        Assert.DoesNotContain("token was refused", dom);
        // The stand-in lists the runs whatever the token: that the right one was sent is read off the requests.
        var last = runs.Requests.Last(request => request.PathAndQuery.StartsWith("/runs", StringComparison.Ordinal));
        Assert.Equal("Bearer right-token", last.Authorization);
    }

    private Task<string> RunChromium(string arguments, int budgetMs) =>
        HeadlessChromium.RunAsync(arguments, temp.File("chromium-" + Guid.NewGuid().ToString("N")), budgetMs);

    public void Dispose() => temp.Dispose();
}
