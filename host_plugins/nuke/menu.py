# MAM2 for Nuke, GUI only: the Nodes menu entry. The node itself is gizmos/MAM2.gizmo.
import nuke

nuke.menu("Nodes").addCommand("MAM2/MAM2 matte", "nuke.createNode('MAM2')")
