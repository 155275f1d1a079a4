namespace HandoffDapr.FakeSidecar.Tests;

public sealed class ReminderTests : SidecarTest
{
    [Fact]
    public async Task Reminder_registration_is_visible_and_firing_reaches_ReceiveReminderAsync_with_the_data()
    {
        await Proxy("run-7").RegisterReminderAsync(new ReminderSpec("retry-launch", "attempt-2", DueMs: 5000, PeriodMs: 0));

        var reminder = Assert.Single(Sidecar.Reminders);
        Assert.Equal(("TestActor", "run-7", "retry-launch", "0h0m5s0ms", ""), (reminder.ActorType, reminder.ActorId, reminder.Name, reminder.DueTime, reminder.Period));
        Assert.Equal("attempt-2", System.Text.Encoding.UTF8.GetString(reminder.DataBytes!));

        using var response = await Sidecar.FireReminderAsync("TestActor", "run-7", "retry-launch");

        Assert.True(response.IsSuccessStatusCode);
        var received = Assert.Single(App.ReminderLog.Received);
        Assert.Equal(("run-7", "retry-launch", "attempt-2"), (received.ActorId, received.Name, received.Payload));
        Assert.Equal(TimeSpan.FromMilliseconds(-1), received.DueTime); // Scheduler sends "dueTime":"" (1.15+)
        Assert.Empty(Sidecar.Reminders); // a one-shot reminder is gone once fired
    }

    [Fact]
    public async Task Due_reminders_fire_in_order_and_periodic_ones_are_rescheduled()
    {
        var start = DateTimeOffset.UtcNow;
        // Registered in the other order than they are due: the firing order is the due times'. Due 19 s apart, as
        // a loaded machine can take a second or more between the two registrations (2 s and 1 s fired "once" first).
        await Proxy("o").RegisterReminderAsync(new ReminderSpec("once", "o", DueMs: 20_000, PeriodMs: 0));
        await Proxy("p").RegisterReminderAsync(new ReminderSpec("poll", "p", DueMs: 1000, PeriodMs: 60_000));

        Assert.Empty(await Sidecar.FireDueRemindersAsync(start.AddMilliseconds(500)));

        var fired = await Sidecar.FireDueRemindersAsync(start.AddSeconds(30));

        Assert.Equal(["poll", "once"], fired.Select(f => f.Reminder.Name));
        Assert.All(fired, f => Assert.Equal(System.Net.HttpStatusCode.OK, f.StatusCode));
        var poll = Assert.Single(Sidecar.Reminders);
        Assert.Equal("poll", poll.Name);
        Assert.Equal(fired[0].Reminder.NextDueAt.AddMinutes(1), poll.NextDueAt);
        Assert.Equal(["p", "o"], App.ReminderLog.Received.Select(r => r.Payload));
    }

    [Fact]
    public async Task One_shot_reminder_whose_callback_fails_is_retried_three_times_a_second_apart_then_dropped()
    {
        // The Scheduler's default failure policy (go-etcd-cron: Constant, interval 1 s, MaxRetries 3): a FAILED trigger
        // is not spent; the same tick fires again 1 s later, four attempts in all.
        var start = DateTimeOffset.UtcNow;
        await Proxy("f").RegisterReminderAsync(new ReminderSpec("once", "fail", DueMs: 1000, PeriodMs: 0));
        var due = Assert.Single(Sidecar.Reminders).NextDueAt;

        var first = Assert.Single(await Sidecar.FireDueRemindersAsync(start.AddSeconds(30)));
        Assert.Equal(System.Net.HttpStatusCode.InternalServerError, first.StatusCode);
        Assert.Equal(due.AddSeconds(1), Assert.Single(Sidecar.Reminders).NextDueAt);

        for (var retry = 2; retry <= 3; retry++)
        {
            Assert.Single(await Sidecar.FireDueRemindersAsync(start.AddSeconds(30)));
            Assert.Equal(due.AddSeconds(retry), Assert.Single(Sidecar.Reminders).NextDueAt);
        }

        Assert.Single(await Sidecar.FireDueRemindersAsync(start.AddSeconds(30)));
        Assert.Empty(Sidecar.Reminders);
        Assert.Equal(4, App.ReminderLog.Received.Count);
    }

    [Fact]
    public async Task Periodic_reminder_whose_callback_keeps_failing_keeps_its_schedule()
    {
        var start = DateTimeOffset.UtcNow;
        await Proxy("pf").RegisterReminderAsync(new ReminderSpec("poll", "fail", DueMs: 1000, PeriodMs: 60_000));
        var due = Assert.Single(Sidecar.Reminders).NextDueAt;

        for (var attempt = 0; attempt < 4; attempt++)
        {
            Assert.Single(await Sidecar.FireDueRemindersAsync(start.AddSeconds(30)));
        }

        Assert.Equal(due.AddMinutes(1), Assert.Single(Sidecar.Reminders).NextDueAt);
    }

    [Fact]
    public async Task GetReminder_returns_the_registration_and_a_missing_one_is_a_404()
    {
        await Proxy("g").RegisterReminderAsync(new ReminderSpec("poll", "data", DueMs: 5000, PeriodMs: 90_000));

        Assert.Equal("data|00:00:05|00:01:30", await Proxy("g").DescribeReminderAsync("poll"));
        Assert.Equal("error:ERR_ACTOR_REMINDER_NOT_FOUND", await Proxy("g").DescribeReminderAsync("nope"));
    }

    [Fact]
    public async Task Reminder_for_a_type_the_app_does_not_host_is_forbidden()
    {
        using var http = new HttpClient { BaseAddress = Sidecar.HttpEndpoint };
        using var response = await http.PutAsync("v1.0/actors/Other/1/reminders/r", new StringContent("""{"dueTime":"0h0m1s0ms"}"""));

        Assert.Equal(System.Net.HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Contains("ERR_ACTOR_REMINDER_NON_HOSTED", await response.Content.ReadAsStringAsync());
    }

    [Theory]
    [InlineData("R3/P1DT", "unsupported period format: R3/P1DT")] // the Scheduler refuses day periods
    [InlineData("5 minutes", "unsupported period format: 5 minutes")]
    public async Task Periods_the_scheduler_refuses_are_errors(string period, string message)
    {
        using var http = new HttpClient { BaseAddress = Sidecar.HttpEndpoint };
        using var response = await http.PutAsync("v1.0/actors/TestActor/1/reminders/r", new StringContent($$"""{"dueTime":"0h0m1s0ms","period":"{{period}}"}"""));

        Assert.Equal(System.Net.HttpStatusCode.InternalServerError, response.StatusCode);
        Assert.Contains("error creating actor reminder: " + message, await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Repeated_reminder_stops_after_its_repetitions()
    {
        using var http = new HttpClient { BaseAddress = Sidecar.HttpEndpoint };
        (await http.PutAsync("v1.0/actors/TestActor/1/reminders/r", new StringContent("""{"dueTime":"1s","period":"R2/PT10S","data":"eA=="}"""))).EnsureSuccessStatusCode();

        var now = DateTimeOffset.UtcNow;
        Assert.Single(await Sidecar.FireDueRemindersAsync(now.AddSeconds(2)));
        Assert.Single(await Sidecar.FireDueRemindersAsync(now.AddSeconds(12)));
        Assert.Empty(Sidecar.Reminders);
    }

    [Fact]
    public async Task Periodic_reminder_registered_without_a_due_time_first_fires_one_period_later()
    {
        // go-etcd-cron: a job with a schedule and no due time starts its clock at creation ("will not trigger at this
        // time"); its first tick is cron.Next(start), one @every period later.
        using var http = new HttpClient { BaseAddress = Sidecar.HttpEndpoint };
        (await http.PutAsync("v1.0/actors/TestActor/1/reminders/r", new StringContent("""{"period":"PT1M"}"""))).EnsureSuccessStatusCode();

        var reminder = Assert.Single(Sidecar.Reminders);
        Assert.Equal(reminder.RegisteredAt.AddMinutes(1), reminder.NextDueAt);
        Assert.Empty(await Sidecar.FireDueRemindersAsync(reminder.RegisteredAt.AddSeconds(30)));
        Assert.Single(await Sidecar.FireDueRemindersAsync(reminder.RegisteredAt.AddMinutes(1)));
    }

    [Fact]
    public async Task Deleted_reminder_is_gone_and_never_fires()
    {
        await Proxy("d").RegisterReminderAsync(new ReminderSpec("poll", "p", DueMs: 1000, PeriodMs: 60_000));
        using var http = new HttpClient { BaseAddress = Sidecar.HttpEndpoint };

        using (var deleted = await http.DeleteAsync("v1.0/actors/TestActor/d/reminders/poll"))
        {
            Assert.Equal(System.Net.HttpStatusCode.NoContent, deleted.StatusCode);
        }

        Assert.Empty(Sidecar.Reminders);
        Assert.Empty(await Sidecar.FireDueRemindersAsync(DateTimeOffset.UtcNow.AddHours(1)));
        Assert.Equal("error:ERR_ACTOR_REMINDER_NOT_FOUND", await Proxy("d").DescribeReminderAsync("poll"));
    }
}
