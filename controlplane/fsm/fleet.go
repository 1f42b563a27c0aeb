package fsm

import (
	"github.com/devfleet/devfleet/controlplane/state"
	"github.com/devfleet/devfleet/controlplane/validate"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
)

func registerFleet(r *registry) {
	r.register("create_region", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.CreateRegion(c.GetCreateRegion().GetRegion())
	})
	r.register("update_region", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		u := c.GetUpdateRegion()
		paths, err := validate.UpdatePaths("update_mask", u.GetUpdateMask(), validate.RegionUpdatable, validate.RegionUpdatable)
		if err != nil {
			return nil, err
		}
		return w.UpdateRegion(u.GetRegion(), paths)
	})
	r.register("delete_region", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return nil, w.DeleteRegion(c.GetDeleteRegion().GetName())
	})

	r.register("create_site", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.CreateSite(c.GetCreateSite().GetSite())
	})
	r.register("update_site", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		u := c.GetUpdateSite()
		paths, err := validate.UpdatePaths("update_mask", u.GetUpdateMask(), validate.SiteUpdatable, validate.SiteUpdatable)
		if err != nil {
			return nil, err
		}
		return w.UpdateSite(u.GetSite(), paths)
	})
	r.register("delete_site", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return nil, w.DeleteSite(c.GetDeleteSite().GetName())
	})

	r.register("create_host", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.CreateHost(c.GetCreateHost().GetHost())
	})
	r.register("update_host", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		u := c.GetUpdateHost()
		paths, err := validate.UpdatePaths("update_mask", u.GetUpdateMask(), validate.HostUpdatable, validate.HostUpdatable)
		if err != nil {
			return nil, err
		}
		return w.UpdateHost(u.GetHost(), paths)
	})
	r.register("delete_host", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return nil, w.DeleteHost(c.GetDeleteHost().GetName())
	})
	r.register("cordon_host", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.CordonHost(c.GetCordonHost().GetName(), c.GetCordonHost().GetReason())
	})
	r.register("uncordon_host", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.UncordonHost(c.GetUncordonHost().GetName(), c.GetUncordonHost().GetReason())
	})

	r.register("create_flavor", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.CreateFlavor(c.GetCreateFlavor().GetFlavor())
	})
	r.register("update_flavor", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		u := c.GetUpdateFlavor()
		paths, err := validate.UpdatePaths("update_mask", u.GetUpdateMask(), validate.FlavorUpdatable, validate.FlavorDefault)
		if err != nil {
			return nil, err
		}
		return w.UpdateFlavor(u.GetFlavor(), paths)
	})
	r.register("delete_flavor", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return nil, w.DeleteFlavor(c.GetDeleteFlavor().GetName())
	})

	r.register("create_devserver", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.CreateDevserver(c.GetCreateDevserver().GetDevserver())
	})
	r.register("update_devserver", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		u := c.GetUpdateDevserver()
		paths, err := validate.UpdatePaths("update_mask", u.GetUpdateMask(), validate.DevserverCommandUpdatable, validate.DevserverUpdatable)
		if err != nil {
			return nil, err
		}
		return w.UpdateDevserver(u.GetDevserver(), paths, u.GetExpectedModifyIndex())
	})
	r.register("delete_devserver", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.DeleteDevserver(c.GetDeleteDevserver().GetName())
	})
	r.register("set_devserver_state", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		s := c.GetSetDevserverState()
		return w.SetDevserverState(s.GetName(), s.GetId(), s.GetState(), s.GetReason(), s.GetDomain(), s.GetFrom())
	})
	r.register("purge_devserver", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		p := c.GetPurgeDevserver()
		return nil, w.PurgeDevserver(p.GetName(), p.GetId())
	})
	r.register("rehome_devserver", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		r := c.GetRehomeDevserver()
		return w.RehomeDevserver(r.GetName(), r.GetId(), r.GetHost(), r.GetReason())
	})
	r.register("report_host_health", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		var reports []state.HostHealthReport
		for _, r := range c.GetReportHostHealth().GetReports() {
			reports = append(reports, state.HostHealthReport{Host: r.GetHost(), Health: r.GetHealth(), Reason: r.GetReason(), LastSeen: r.GetLastSeenTime()})
		}
		return nil, w.ReportHostHealth(reports)
	})
	r.register("create_notice", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.CreateNotice(c.GetCreateNotice().GetNotice())
	})
}

func registerMigrations(r *registry) {
	r.register("create_migration", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.CreateMigration(c.GetCreateMigration().GetMigration())
	})
	r.register("update_migrations", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		var us []*state.MigrationUpdate
		for _, u := range c.GetUpdateMigrations().GetUpdates() {
			us = append(us, &state.MigrationUpdate{ID: u.GetId(), Phase: u.GetPhase(), Progress: u.GetProgress(),
				Attempts: u.GetAttempts(), From: u.GetFrom(), Reason: u.GetReason(), Cold: u.GetCold(), ColdStep: u.GetColdStep(), FenceTerm: u.GetFenceTerm()})
		}
		return nil, w.UpdateMigrations(us)
	})
	r.register("finish_migration", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		f := c.GetFinishMigration()
		return w.FinishMigration(f.GetId(), f.GetOutcome(), f.GetReason(), f.GetProgress())
	})
	r.register("request_migration_abort", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.RequestMigrationAbort(c.GetRequestMigrationAbort().GetId())
	})
	r.register("retarget_migration", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		t := c.GetRetargetMigration()
		return w.RetargetMigration(t.GetId(), t.GetDestHost(), t.GetReason())
	})
}

func registerDrains(r *registry) {
	r.register("start_drain", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.StartDrain(c.GetStartDrain().GetDrain(), c.GetStartDrain().GetItems())
	})
	r.register("update_drain", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		u := c.GetUpdateDrain()
		var items []state.DrainItemUpdate
		for _, i := range u.GetItems() {
			items = append(items, state.DrainItemUpdate{Devserver: i.GetDevserver(), State: i.GetState(), MigrationID: i.GetMigrationId(),
				DestHost: i.GetDestHost(), Blocker: i.GetBlocker(), Attempts: i.GetAttempts(), From: i.GetFrom(), Event: i.GetEvent(), Detail: i.GetDetail()})
		}
		return w.UpdateDrain(u.GetId(), items, u.GetEvents())
	})
	r.register("finish_drain", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		f := c.GetFinishDrain()
		return w.FinishDrain(f.GetId(), f.GetState(), f.GetReason(), f.GetUncordon())
	})
	r.register("request_drain_cancel", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		x := c.GetRequestDrainCancel()
		return w.RequestDrainCancel(x.GetId(), x.GetAbortInFlight(), x.GetUncordon())
	})
	r.register("extend_drain", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		x := c.GetExtendDrain()
		return w.ExtendDrain(x.GetId(), x.GetBy().AsDuration())
	})
}

func registerDecoms(r *registry) {
	r.register("start_decom", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.StartDecom(c.GetStartDecom().GetDecom())
	})
	r.register("advance_decom", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		a := c.GetAdvanceDecom()
		return w.AdvanceDecom(a.GetId(), a.GetFrom(), a.GetTo(), a.GetDetail(), a.GetDrainId())
	})
	r.register("finish_decom", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		f := c.GetFinishDecom()
		return w.FinishDecom(f.GetId(), f.GetState(), f.GetReason())
	})
	r.register("request_decom_abort", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.RequestDecomAbort(c.GetRequestDecomAbort().GetId())
	})
	r.register("fence_host", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.FenceHost(c.GetFenceHost().GetName(), c.GetFenceHost().GetReason())
	})
	r.register("unfence_host", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.UnfenceHost(c.GetUnfenceHost().GetName())
	})
	r.register("record_dead_letter", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.RecordDeadLetter(c.GetRecordDeadLetter().GetDeadLetter())
	})
	r.register("open_alert", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.OpenAlert(c.GetOpenAlert().GetAlert())
	})
	r.register("set_alert_findings", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		x := c.GetSetAlertFindings()
		return w.SetAlertFindings(x.GetId(), x.GetFindings(), x.GetChain(), x.GetAnalysisError())
	})
	r.register("close_alert", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.CloseAlert(c.GetCloseAlert().GetId(), c.GetCloseAlert().GetReason())
	})
	r.register("retire_host", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.RetireHost(c.GetRetireHost().GetName(), c.GetRetireHost().GetReason())
	})
}

func registerContainers(r *registry) {
	r.register("create_profile", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.CreateProfile(c.GetCreateProfile().GetProfile())
	})
	r.register("delete_profile", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.DeleteProfile(c.GetDeleteProfile().GetName())
	})
	r.register("set_pool", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.SetPool(c.GetSetPool().GetPool())
	})
	r.register("create_container", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.CreateContainer(c.GetCreateContainer().GetContainer())
	})
	r.register("claim_container", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.ClaimContainer(c.GetClaimContainer().GetName(), c.GetClaimContainer().GetOwner())
	})
	r.register("set_container_state", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		s := c.GetSetContainerState()
		return w.SetContainerState(s.GetName(), s.GetId(), s.GetState(), s.GetReason(), s.GetFrom())
	})
	r.register("release_container", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.ReleaseContainer(c.GetReleaseContainer().GetName(), c.GetReleaseContainer().GetReason())
	})
	r.register("purge_container", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		p := c.GetPurgeContainer()
		return nil, w.PurgeContainer(p.GetName(), p.GetId())
	})
}
