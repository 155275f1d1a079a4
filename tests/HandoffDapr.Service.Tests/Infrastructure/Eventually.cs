namespace HandoffDapr.Service.Tests.Infrastructure;

/// <summary>Waits for something the service does in the background; fails the test when it has not happened in 10 s.</summary>
public static class Eventually
{
    public static Task True(Func<bool> condition) => True(() => Task.FromResult(condition()));

    public static async Task True(Func<Task<bool>> condition) =>
        Assert.True(await Within(TimeSpan.FromSeconds(10), condition), "condition not met within 10 s");

    /// <summary>
    /// Whether the condition comes to hold within the limit, polled without holding a thread. For a wait inside a fake
    /// sidecar's hook, where a failed assertion would only fail the sidecar's request, or a test with its own message:
    /// the caller asserts on the answer.
    /// </summary>
    public static Task<bool> Within(TimeSpan limit, Func<bool> condition) => Within(limit, () => Task.FromResult(condition()));

    public static async Task<bool> Within(TimeSpan limit, Func<Task<bool>> condition)
    {
        var deadline = DateTime.UtcNow + limit;
        while (!await condition())
        {
            if (DateTime.UtcNow >= deadline)
            {
                return false;
            }

            await Task.Delay(20);
        }

        return true;
    }
}
