namespace HandoffDapr.Service.Tests.Infrastructure;

/// <summary>Waits for something the service does in the background; fails the test when it has not happened in 10 s.</summary>
public static class Eventually
{
    public static Task True(Func<bool> condition) => True(() => Task.FromResult(condition()));

    public static async Task True(Func<Task<bool>> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not met within 10 s");
            await Task.Delay(20);
        }
    }
}
